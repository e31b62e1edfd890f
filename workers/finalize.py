"""Finalize a stopped recording (docs/architecture.md): close the grace window, mux each participant, upload, manifest.

Idempotent by construction: outputs already uploaded are recorded in Redis per participant and skipped on
a re-run; object keys are deterministic, so a retry overwrites rather than duplicates.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import redis
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from storage_providers import StorageError, StorageProvider, StorageUnavailableError
from storage_providers.base import sha256_file
from workers import metrics
from workers.checkpoints import RedisCheckpoint
from workers.chunk_index import StreamFacts
from workers.errors import UploadFailed
from workers.media.errors import MediaError
from workers.events import EventPublisher, Listener, ProgressReporter
from workers.live.checksum import METADATA_KEY as PARTS_METADATA
from workers.live.step import LiveFinalizer
from workers.manifest import (CONTENT_TYPES, MANIFEST_NAME, build_manifest, media_origin_ms, object_prefix,
                              recording_window_ms, start_offsets)
from workers.media.cuts import StreamCuts
from workers.media.muxer import StreamInput
from workers.outputs import PreparedOutput, prepare_output
from workers.pause import Pause, parse_pauses, stream_cuts
from workers.records import OutputThumbnail, RecordingHash, StoredOutput, outputs_json, parse_outputs
from workers.settings import Settings
from workers.staging import Staging
from workers.state import ChunkRecord, RecordingStore, State
from workers.status import NO_OUTPUT, participant_entries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPlan:
    """One stream as finalize plans it, from bounded reads: the counters intake keeps (facts) and the stream's first
    chunk, whose timestamp lines the participant up in the manifest. Every chunk's record is read only for a
    participant that goes to batch (or whose paused media may be cut), so the live path's work after stop does not
    grow with the number of chunks."""

    facts: StreamFacts
    first: ChunkRecord | None


Plan = dict[str, dict[str, StreamPlan]]
"""participantId → stream type → its plan."""


Guard = Callable[[], None]
"""Raises (LockLost) when this run may no longer write; called before each write past muxing."""


def _no_guard() -> None:
    """Runs without a lock (tests, CLI) have nothing to lose."""


def _retryable(exc: BaseException) -> bool:
    """Unreachable backends and local I/O hiccups are retried; a definite answer (not found, bad key) is not."""
    return isinstance(exc, StorageUnavailableError) or (isinstance(exc, OSError) and not isinstance(exc, StorageError))


@dataclass
class Finalizer:
    store: RecordingStore
    staging: Staging
    provider: StorageProvider
    publisher: EventPublisher
    settings: Settings
    sleep: Callable[[float], None] = time.sleep
    live: LiveFinalizer | None = None
    """LIVE_FINALIZE: the output folded while the room recorded, used when whole (workers/live/), else batch."""

    def run(self, recording_id: str, listener: Listener | None = None, guard: Guard = _no_guard) -> str:
        """Finalize once; returns the recording's final (or current, if not ours to finish) state. guard()
        runs before every write past muxing (uploads, outputs, manifest, final state) and raises LockLost
        when this run no longer holds the finalize lock."""
        state = self._close_grace_window(recording_id)
        if state not in (State.MUXING, State.UPLOADING):
            return state
        reporter = ProgressReporter(self.store.update, self.publisher, recording_id, listener)
        rec: RecordingHash = self.store.get(recording_id) or {}
        plan = self._plan(recording_id)
        done = parse_outputs(rec.get("outputs"))
        errors: dict[str, str] = json.loads(rec.get("participantErrors") or "{}")
        prepared = self._mux_all(rec, plan, done, errors, reporter)
        try:
            self._upload_all(rec, prepared, done, reporter, guard)
            entries = participant_entries(self.store, recording_id, errors, rec=rec)
            clock_offsets = {pid: entry.get("clockOffsetSeconds") for pid, entry in entries.items()}
            origins = {pid: media_origin_ms([s.first for s in streams.values()]) for pid, streams in plan.items()}
            for pid, offset in start_offsets(origins, done, clock_offsets, recording_window_ms(rec)).items():
                if pid in done:
                    done[pid] = done[pid].aligned_at(offset)
            guard()
            self.store.update(recording_id, outputs=outputs_json(done))
            self._upload_manifest(rec, build_manifest(rec, origins, done, entries), guard)
        except UploadFailed as exc:
            return self._fail(recording_id, str(exc), reporter)
        if not done:
            reason = NO_OUTPUT + (f": {'; '.join(f'{p}: {m}' for p, m in sorted(errors.items()))}" if errors else "")
            return self._fail(recording_id, reason, reporter)
        guard()
        self.store.finish(recording_id, State.COMPLETED)
        self.staging.finished(recording_id)
        metrics.recording_completed(rec.get("stoppedAt"), [o.duration_seconds for o in done.values()],
                                    time.time())
        reporter.state(State.COMPLETED.value, progress=1.0, outputs=len(done))
        return State.COMPLETED.value

    def _close_grace_window(self, recording_id: str) -> str:
        """Wait out the grace period, then atomically stop accepting chunks (finalizing → muxing)."""
        while True:
            state, wait_until = self.store.begin_mux(recording_id)
            if state != "wait":
                return state
            self.sleep(max(0.05, min(wait_until - time.time(), 30.0)))  # type: ignore[operator]

    def _plan(self, recording_id: str) -> Plan:
        """Every stream's facts and first chunk in two round trips, whatever the chunk count."""
        streams = self.store.streams(recording_id)
        facts = self.store.index.facts(recording_id, streams)
        known = [s for s in streams if facts[s].first is not None]
        firsts = dict(zip(known, self.store.index.records_at(
            recording_id, [(pid, stream_type, facts[(pid, stream_type)].first) for pid, stream_type in known])))
        plan: Plan = {}
        for pid, stream_type in streams:
            first = firsts.get((pid, stream_type))
            if facts[(pid, stream_type)].first is None:  # counters lost beside the index (intake never leaves that)
                records = self.store.chunks(recording_id, pid, stream_type)
                first = records[min(records)] if records else None
            plan.setdefault(pid, {})[stream_type] = StreamPlan(facts[(pid, stream_type)], first)
        return plan

    def _records(self, recording_id: str, participant_id: str, streams: dict[str, StreamPlan]
                 ) -> dict[str, dict[int, ChunkRecord]]:
        """Every chunk's record of a participant's streams: what batch reads (one HGETALL per stream)."""
        return {stream_type: self.store.chunks(recording_id, participant_id, stream_type) for stream_type in streams}

    def _inputs(self, recording_id: str, participant_id: str, streams: dict[str, dict[int, ChunkRecord]],
                pauses: list[Pause] | None = None) -> list[StreamInput]:
        """Each stream's readable chunk files in sequence order (on this worker's disk, whichever node received
        them); one the index names but staging cannot give back whole (gone, or another size) is marked
        unreadable, so status and manifest list it as missing."""
        inputs = []
        cuts = self._cuts(recording_id, participant_id, streams, pauses or [])
        for stream_type in sorted(streams, key=lambda k: 0 if k == "audio" else 1):
            present = []
            wanted = [(seq, record.name, record.size) for seq, record in sorted(streams[stream_type].items())]
            for seq, path in self.staging.local_chunks(recording_id, participant_id, stream_type, wanted):
                record = streams[stream_type][seq]
                if path is not None:
                    present.append((seq, path))
                else:
                    log.warning("recording %s: staged chunk %s/%s/%d is unreadable", recording_id, participant_id,
                                stream_type, seq)
                    self.store.index.mark_unreadable(recording_id, participant_id, stream_type, seq, record.size)
            inputs.append(StreamInput(stream_type=stream_type, chunks=present, cuts=cuts.get(stream_type)))
        return inputs

    def _cuts(self, recording_id: str, participant_id: str, streams: dict[str, dict[int, ChunkRecord]],
              pauses: list[Pause]) -> dict[str, StreamCuts]:
        """Paused media to cut from a client that kept recording (none when nothing paused: no extra read)."""
        if not pauses:
            return {}
        facts = self.store.index.facts(recording_id, [(participant_id, stream_type) for stream_type in streams])
        return stream_cuts(pauses, streams, {stream_type: fact.skew_ms for (_, stream_type), fact in facts.items()})

    def _mux_all(self, rec: RecordingHash, plan: Plan, done: dict[str, StoredOutput], errors: dict[str, str],
                 reporter: ProgressReporter) -> dict[str, PreparedOutput]:
        recording_id = rec["recordingId"]
        todo = {pid: streams for pid, streams in plan.items() if pid not in done}
        total = sum(s.facts.bytes for streams in todo.values() for s in streams.values()) or 1
        consumed = 0
        results: dict[str, PreparedOutput] = {}
        pauses = parse_pauses(rec.get("pauses"))
        reporter.report(State.MUXING.value, 0.0)
        for pid, streams in sorted(todo.items()):
            size = sum(s.facts.bytes for s in streams.values())

            def on_progress(fraction: float, base: int = consumed, size: int = size, pid: str = pid) -> None:
                reporter.report(State.MUXING.value, (base + fraction * size) / total, participantId=pid)

            try:
                results[pid] = (self.live and self.live.finish(rec, pid, sorted(streams))) or self._batch(
                    recording_id, pid, self._records(recording_id, pid, streams), rec.get("format", "webm"), pauses,
                    on_progress)
                errors.pop(pid, None)
            except MediaError as exc:
                log.warning("recording %s participant %s: %s", recording_id, pid, exc.message)
                errors[pid] = exc.message
            except (redis.RedisError, StorageError):
                raise  # an outage, not this participant's data: the task retries the whole finalize
            except Exception as exc:  # noqa: BLE001 - one participant's data must not fail the others
                log.exception("recording %s participant %s: unexpected error while muxing", recording_id, pid)
                errors[pid] = f"this participant's media could not be processed ({type(exc).__name__})"
            finally:
                self.staging.release(recording_id, pid)
            consumed += size
            self.store.update(recording_id, participantErrors=errors)
        reporter.report(State.MUXING.value, 1.0)
        return results

    def _batch(self, recording_id: str, participant_id: str, streams: dict[str, dict[int, ChunkRecord]], fmt: str,
               pauses: list[Pause], progress: Callable[[float], None]) -> PreparedOutput:
        """The reference path: remux every readable chunk (the live path's output only ever stands in for this)."""
        prepared = prepare_output(
            self._inputs(recording_id, participant_id, streams, pauses), self.staging.output_dir(recording_id),
            participant_id, fmt, mp4=self.settings.mp4, progress=progress,
            thumbnail_offset=self.settings.thumbnail_offset_seconds, thumbnail_width=self.settings.thumbnail_width,
        )
        self._mark_dropped(recording_id, participant_id, streams, prepared.dropped_chunks)
        return prepared

    def _mark_dropped(self, recording_id: str, participant_id: str, streams: dict[str, dict[int, ChunkRecord]],
                      dropped: dict[str, list[int]]) -> None:
        """Chunks the demuxer had to leave out are listed as missing in status and manifest, like lost ones."""
        for stream_type, sequences in dropped.items():
            for seq in sequences:
                log.warning("recording %s: chunk %s/%s/%d could not be demuxed", recording_id, participant_id, stream_type, seq)
                self.store.index.mark_unreadable(recording_id, participant_id, stream_type, seq, streams[stream_type][seq].size)

    def _upload_all(self, rec: RecordingHash, prepared: dict[str, PreparedOutput], done: dict[str, StoredOutput],
                    reporter: ProgressReporter, guard: Guard) -> None:
        recording_id = rec["recordingId"]
        prefix = object_prefix(rec["room"], recording_id)
        guard()
        self.store.update(recording_id, state=State.UPLOADING.value)
        total = sum(p.bytes + (p.thumbnail.path.stat().st_size if p.thumbnail else 0) for p in prepared.values()) or 1
        sent = 0
        reporter.report(State.UPLOADING.value, 0.0, bytesSent=0, bytesTotal=total)

        def on_progress(done_bytes: int, _total: int) -> None:
            reporter.report(State.UPLOADING.value, (sent + done_bytes) / total, bytesSent=sent + done_bytes, bytesTotal=total)

        for pid, output in sorted(prepared.items()):
            key = f"{prefix}{pid}.{output.extension}"
            metadata = {
                "recording-id": recording_id, "room": rec["room"], "participant": pid,
                "duration-seconds": f"{output.duration_seconds:.3f}",
            }
            if output.checksum is not None:  # live: hashed while recording, no whole-file read after stop
                checksum = None
                metadata[PARTS_METADATA] = output.checksum.metadata()
            else:
                checksum = sha256_file(output.path)
                metadata["sha256"] = checksum
            self._upload(recording_id, key, output.path, CONTENT_TYPES.get(output.extension, "application/octet-stream"),
                         metadata, on_progress, guard)
            sent += output.bytes
            thumbnail_key = None
            if output.thumbnail:
                thumbnail_key = f"{prefix}{pid}.jpg"
                self._upload(recording_id, thumbnail_key, output.thumbnail.path, "image/jpeg",
                             {"recording-id": recording_id, "participant": pid}, on_progress, guard)
                sent += output.thumbnail.path.stat().st_size
            done[pid] = StoredOutput(
                participant_id=pid, format=output.format, bytes=output.bytes,
                duration_seconds=round(output.duration_seconds, 3), provider=self.provider.name, key=key,
                sha256=checksum, method=output.method, tracks=output.tracks, segments=output.segments,
                media_start_seconds=output.start_seconds, timestamp_repairs=output.timestamp_repairs,
                dropped_packets=output.dropped_packets, thumbnail_key=thumbnail_key,
                paused_seconds_cut=output.paused_seconds_cut,
                checksum=output.checksum.to_json() if output.checksum is not None else None,
                thumbnail=OutputThumbnail(output.thumbnail.width, output.thumbnail.height, output.thumbnail.seconds)
                if output.thumbnail else None,
            )
            guard()
            self.store.update(recording_id, outputs=outputs_json(done))

    def _upload(self, recording_id: str, key: str, path: Path, content_type: str,
                metadata: dict[str, str], progress: Callable[[int, int], None], guard: Guard) -> None:
        guard()
        checkpoint = RedisCheckpoint(self.store.redis, recording_id, key)
        attempts = self.settings.upload_max_retries + 1
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_random_exponential(multiplier=self.settings.upload_retry_base_seconds, max=60),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    self.provider.upload_file(key, path, content_type=content_type, metadata=metadata,
                                              progress=progress, checkpoint=checkpoint)
        except (StorageError, OSError) as exc:
            abort = getattr(self.provider, "abort_upload", None)
            if abort is not None:
                try:
                    abort(key, checkpoint)
                except (StorageError, OSError):
                    log.warning("abort of %s failed; the provider's lifecycle rules must clean it", key)
            checkpoint.clear()
            if not isinstance(exc, StorageError):  # local: the operator gets the path, the status only the errno text
                log.warning("upload of %s failed locally: %s", key, exc)
            detail = exc if isinstance(exc, StorageError) else exc.strerror or type(exc).__name__
            raise UploadFailed(f"upload of {key} to {self.provider.name} failed after {attempts} attempts: {detail}") from exc
        checkpoint.clear()
        metrics.STORAGE_BYTES_WRITTEN.inc(path.stat().st_size)

    def _upload_manifest(self, rec: RecordingHash, manifest: dict, guard: Guard) -> None:
        key = object_prefix(rec["room"], rec["recordingId"]) + MANIFEST_NAME
        path = self.staging.output_dir(rec["recordingId"]) / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2))
        self._upload(rec["recordingId"], key, path, "application/json", {"recording-id": rec["recordingId"]}, lambda *_: None, guard)

    def _fail(self, recording_id: str, reason: str, reporter: ProgressReporter) -> str:
        log.error("recording %s failed: %s", recording_id, reason)
        self.store.finish(recording_id, State.FAILED, error=reason)
        self.staging.finished(recording_id)  # a requeue muxes again, on whichever worker takes it
        reporter.state(State.FAILED.value, error=reason)
        return State.FAILED.value

