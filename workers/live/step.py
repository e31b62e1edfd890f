"""The live step: fold each participant's newly contiguous chunks into its growing output while the room
records, and at stop fold the tail and close the file (docs/live-finalize.md says why this shape).

What it handles: WebM/Matroska streams copied as they are, and a participant's only stream in fragmented MP4
(Safari), no pause cut, chunks on this worker's disk; a participant's only stream may restart its recorder (a new
header or not), and a stream that begins later joins when its media comes after what was folded. Anything else (or anything odd on the way) marks the participant
failed here, and finalize takes the batch path for it, which stays the reference.
"""
from __future__ import annotations

import logging
import math
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import av
import redis

from storage_providers import StorageError, StorageProvider
from storage_providers.base import sha256_file

from workers import keys, metrics
from workers.live.checksum import PART_SIZE
from workers.live.chunks import contiguous, header_chunks, locate, open_chunks
from workers.checkpoints import RedisCheckpoint
from workers.live.output import RESERVED_BYTES, LiveFile
from workers.manifest import CONTENT_TYPES, object_prefix
from workers.live.source import FRAGMENTED, NotYet, ShortWindow, Unsupported, layout_of
from workers.live.state import Cursor, LiveState, LiveStates
from workers.live.mp4_output import LiveMp4, Mp4Progress
from workers.live.transcode import Captured, TranscodeCarry, transcode_window
from workers.live.window import Window, WindowSource, remux_window
from workers.media.convert import to_mp4
from workers.media.encoding import Mp4Settings
from workers.media.chunk_stream import starts_run
from workers.media.errors import MediaError
from workers.media.muxer import EXTENSIONS, MuxResult, TrackInfo, verify_seekable
from workers.media.thumbnail import Thumbnail, checked_thumbnail, make_thumbnail
from workers.outputs import PreparedOutput, poster_or_none
from workers.pause import parse_pauses, stream_cuts
from workers.records import RecordingHash
from workers.staging import Staging
from workers.staging.local import ChunkStaging
from workers.state import RecordingStore

log = logging.getLogger(__name__)

MAX_WINDOW_CHUNKS = 600
"""Chunks one step reads at most while recording (ten minutes of one-second chunks): a step's work is bounded.
When the first window must reach past the timeline start's look-ahead, that step reads on without a cap. A
Cluster lasts at most 32 s (Matroska's 16-bit block offsets), so any timeslice from 55 ms up finds one in it."""

LOCK_SECONDS = 30
"""A step's lock outlives any step (at most MAX_WINDOW_CHUNKS, about a second of work); one left by a killed worker
expires by itself well inside the two minutes a restarted worker has to complete the recording."""

MAX_TRANSCODE_CHUNKS = 20
"""Chunks one step reads at most while recording when it transcodes (`format: mp4`): a transcode costs about 0.75 s
of CPU per second of 720p here, so such a step stays well inside TRANSCODE_LOCK_SECONDS."""

TRANSCODE_LOCK_SECONDS = 120
"""The lock of a step that transcodes: its work is about fifty times a copy step's. Finalize still waits only
LOCK_SECONDS for it at stop (then batch), so a lock left by a killed worker costs no more than today."""

MAX_AHEAD_PARTS = 2
"""Parts one step uploads at most (16 MiB), so a step stays well inside its lock; a backlog goes over later steps,
and what is left at stop goes then. A 3 Mbit/s camera fills one 8 MiB part in about 22 s."""

HOST = socket.gethostname()
"""The node a live output was started on: its files are on that node's disk only."""


def _mp4(rec: RecordingHash) -> bool:
    return rec.get("format", "webm") == "mp4"


def batch_order(types) -> list[str]:
    """The batch muxer's source order (workers/finalize.py _inputs): the audio stream first."""
    return sorted(types, key=lambda t: (0 if t == "audio" else 1, t))


@dataclass(frozen=True)
class _StreamCut:
    """What a window took of one stream, and how to find where the next one begins."""

    source: WindowSource
    chunks: list[tuple[int, Path]]
    start: int
    cut: int
    until: float
    clusters: list[int]
    run_ends: bool = False
    """A restarted recorder's header follows: the next window begins its run."""

    def resume(self, waiting: int | None) -> tuple[int, int]:
        """Where (in the chunks' concatenation) the next window starts: the Cluster holding the first packet left
        waiting, else the cut; and how many bytes into it that packet lies."""
        if waiting is None:
            return self.cut, 0
        offset = self.start + waiting - self.source.body_at
        cluster = max((c for c in self.clusters if c <= offset), default=self.start)
        return cluster, offset - cluster


def _next_run(cursor: Cursor, sequence: int, single: bool) -> None:
    """Begin the run of a recorder restarted at `sequence` (a new header): batch starts its segment where every
    track of the runs before ended, which the cursor knows once the run before was folded to its end."""
    if not single:
        raise Unsupported("a restarted recorder in one of several streams")
    if not cursor.lane_ends or any(end is None for end in cursor.lane_ends.values()):
        raise Unsupported("where the run before a restart ends is unsure (its last window held one packet, or a "
                          "state from before runs were kept)")
    cursor.ended = max([cursor.ended, *cursor.lane_ends.values()])  # type: ignore[list-item]
    cursor.run, cursor.header, cursor.run_offset, cursor.lane_ends = sequence, 0, None, {}
    cursor.run_bytes, cursor.clock = 0, None if cursor.clock is None else {}
    cursor.runs += 1


@dataclass
class LiveFinalizer:
    store: RecordingStore
    staging: Staging
    states: LiveStates
    thumbnail_offset: float = 1.0
    thumbnail_width: int = 640
    part_size: int = PART_SIZE
    """Bytes per checksummed part of a live output (workers/live/checksum.py); also the storage part size when parts
    are uploaded ahead (only when STORAGE_PART_SIZE equals it)."""
    provider: StorageProvider | None = None
    """Where outputs go: parts are uploaded while recording when it takes them ahead (S3, GCS, Vercel Blob)."""
    mp4: Mp4Settings = Mp4Settings()
    """`format: mp4`: the batch transcode's encoder settings, which each live window's transcode uses too."""

    def step(self, recording_id: str, final: bool = False) -> None:
        """Fold in what arrived for every participant (at stop: everything, then close each file)."""
        rec = self.store.get(recording_id) or {}
        streams: dict[str, list[str]] = {}
        for participant_id, stream_type in self.store.streams(recording_id):
            streams.setdefault(participant_id, []).append(stream_type)
        failure: Exception | None = None
        for participant_id, types in sorted(streams.items()):
            try:
                self.step_participant(recording_id, rec, participant_id, types, final)
            except Exception as exc:  # noqa: BLE001 - one participant's step must not hold back the others'
                log.warning("recording %s participant %s: live step failed: %r", recording_id, participant_id, exc)
                failure = failure or exc
        if failure is not None:
            raise failure  # after every participant had its step: the task's own retry policy sees it

    def step_participant(self, recording_id: str, rec: RecordingHash, participant_id: str, types: list[str],
                         final: bool) -> bool:
        """One step for one participant under its lock; False when the lock stayed with another holder (at
        stop, after waiting LOCK_SECONDS: a step killed mid-way; then the participant goes to batch)."""
        lock = self.store.redis.lock(keys.live_lock(recording_id, participant_id),
                                     timeout=TRANSCODE_LOCK_SECONDS if _mp4(rec) else LOCK_SECONDS,
                                     blocking=final, blocking_timeout=LOCK_SECONDS if final else None)
        if not lock.acquire():
            metrics.LIVE_STEPS.labels("waiting").inc()
            return False
        try:
            started = time.perf_counter()
            outcome = self._step_locked(recording_id, rec, participant_id, types, final)
            metrics.LIVE_STEPS.labels(outcome).inc()
            if outcome == "folded":
                metrics.LIVE_STEP_DURATION.observe(time.perf_counter() - started)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass
        return True

    def _step_locked(self, recording_id: str, rec: RecordingHash, participant_id: str, types: list[str],
                     final: bool) -> str:
        """The step's outcome, for metrics: folded, waiting or batch."""
        state = self.states.get(recording_id, participant_id)
        if state is not None and (state.failed or state.closed):
            return "batch" if state.failed else "waiting"
        try:
            self._check(rec)
            types = batch_order(types)
            state = state if state is not None and state.windows else self._new_state(recording_id, participant_id,
                                                                                   types, _mp4(rec))
            if state.host != HOST:
                raise Unsupported(f"the live output is on {state.host}, not on this node")
            if state.windows and list(state.streams) != types and state.bytes < self.part_size:
                log.info("recording %s participant %s: a stream began after the first window; the live output "
                         "begins again with every stream", recording_id, participant_id)
                state = self._new_state(recording_id, participant_id, types, _mp4(rec))
            joining = self._joining(recording_id, participant_id, state, types)
            try:
                more = self._fold(recording_id, participant_id, state, final, joining=joining)
            except ShortWindow:
                more = self._fold(recording_id, participant_id, state, final, capped=False,
                                  joining=joining)  # however small the chunks
            while final and more:  # a restarted recorder in the tail: one window per run
                more = self._fold(recording_id, participant_id, state, final)
            if not final:
                self._poster(recording_id, participant_id, state)
                self._send_ahead(recording_id, rec, participant_id, state)
            return "folded"
        except NotYet:
            return "waiting"
        except (Unsupported, MediaError, OSError) as exc:
            reason = exc.message if isinstance(exc, MediaError) else str(exc)
            log.info("recording %s participant %s: live finalize left to batch: %s", recording_id,
                     participant_id, reason)
            self.states.fail(recording_id, participant_id, reason)
            for extension in set(EXTENSIONS.values()):
                self._file(recording_id, participant_id, extension).remove()
            self._mp4_file(recording_id, participant_id).remove()
            return "batch"

    def finish(self, rec: RecordingHash, participant_id: str, types: list[str]) -> PreparedOutput | None:
        """Finalize's hook, given the participant's stream types: fold the tail, close the file, add the poster;
        None sends the participant to batch. It reads no chunk's index entry behind the live position (only the
        header's and the tail's), so its work does not grow with the recording's length."""
        recording_id = rec["recordingId"]
        state = self.states.get(recording_id, participant_id)
        if state is None or state.failed or not state.windows:
            return None  # nothing folded while recording (or lost): batch does the same work, and is the reference
        if not self.step_participant(recording_id, rec, participant_id, sorted(types), final=True):
            return None
        if self._batch_would_cut(rec, participant_id, types):
            log.info("recording %s participant %s: paused media to cut, batch instead", recording_id, participant_id)
            return None
        muxed = self.result(recording_id, participant_id, types)
        if muxed is None:
            return None
        state = self.states.get(recording_id, participant_id)
        if state is not None and state.transcode is not None:
            return self._mp4_output(rec, participant_id, muxed, state)
        extension = muxed.path.suffix.lstrip(".")  # the output's format as batch names it: webm or mkv
        try:
            checksum = self._file(recording_id, participant_id, extension).checksum(state.bytes)  # type: ignore[union-attr]
        except OSError as exc:
            log.warning("recording %s participant %s: live checksums unreadable, batch instead: %s", recording_id,
                        participant_id, exc)
            return None
        return PreparedOutput(
            path=muxed.path, format=extension, bytes=muxed.bytes, duration_seconds=muxed.duration_seconds,
            method="copy", tracks=[t.to_json() | {"method": "copy"} for t in muxed.tracks],
            segments=muxed.segments,
            start_seconds=muxed.start_seconds, timestamp_repairs=muxed.timestamp_repairs,
            dropped_packets=muxed.dropped_packets,
            thumbnail=self._kept_poster(recording_id, participant_id, state)  # type: ignore[arg-type]
            or poster_or_none(muxed.path, muxed.path.with_name(f"{participant_id}.jpg"), self.thumbnail_offset,
                              self.thumbnail_width),
            checksum=checksum,
        )

    def result(self, recording_id: str, participant_id: str, types: list[str]) -> MuxResult | None:
        """At stop, after the final step: the closed live output of a participant whose streams are `types`, when
        it holds exactly what the batch path would read (every chunk, nothing after its position), else None."""
        state = self.states.get(recording_id, participant_id)
        if state is None or state.failed or not state.windows or list(state.streams) != batch_order(types) \
                or state.host != HOST or not self._covers(recording_id, participant_id, state):
            return None
        live = self._file(recording_id, participant_id, EXTENSIONS[state.output_fmt])
        if not live.path.exists() or live.path.stat().st_size < state.bytes:
            return None
        try:
            if not state.closed:
                live.finish(state.output_fmt, state.bytes, state.cue_bytes, state.end_seconds)
                state.closed = True
                self.states.put(recording_id, participant_id, state)
            path = live.path
            duration = verify_seekable(path)
        except (Unsupported, MediaError, OSError) as exc:
            log.warning("recording %s participant %s: live output unusable, batch instead: %s", recording_id,
                        participant_id, exc)
            return None
        infos = [TrackInfo(**info) for info in state.infos]
        return MuxResult(path=path, format=state.output_fmt, bytes=path.stat().st_size, duration_seconds=duration,
                         tracks=infos, segments=sum(c.runs for c in state.streams.values()), dropped_chunks=[],
                         dropped_packets=state.tracks.dropped, start_seconds=round(state.tracks.start or 0.0, 6),
                         timestamp_repairs=sum(c.repairs for c in state.streams.values()))

    def _covers(self, recording_id: str, participant_id: str, state: LiveState) -> bool:
        """Whether each stream's index is exactly the chunks from the cursor's first sequence to its position, from
        the counters intake keeps and the index's entry count (a few bounded reads, however long the recording):
        its lowest and highest sequences are those, it holds that many entries (so no hole between them), and none
        was found unreadable (the facts' count leaves those out). A late chunk below the first, or any after the
        position, changes the lowest or highest; then batch, the reference, reads the whole index."""
        streams = [(participant_id, stream_type) for stream_type in state.streams]
        facts = self.store.index.facts(recording_id, streams)
        held = self.store.index.held(recording_id, streams)
        for stream, fact in facts.items():
            cursor = state.streams[stream[1]]
            span = cursor.position - cursor.first + 1
            if (fact.first, fact.last, fact.chunks, held[stream]) != (cursor.first, cursor.position, span, span):
                return False
        return True

    def _poster(self, recording_id: str, participant_id: str, state: LiveState) -> None:
        """Take the poster while recording, once the output holds video past the thumbnail offset: from a snapshot
        of the file as stop would close it (workers/live/output.py), so batch's rule picks the same frame (the
        finished file is at least as long, so the offset stands). A poster that cannot be taken yet, or fails,
        costs nothing: the next step tries again, and at stop it is made from the closed file as before."""
        if self.thumbnail_width <= 0 or self._poster_wanted(state) is not None \
                or state.end_seconds <= self.thumbnail_offset \
                or not any(info.get("media_type") == "video" for info in state.infos):
            return
        live = self._file(recording_id, participant_id, EXTENSIONS[state.output_fmt])
        try:
            with live.snapshot(state.output_fmt, state.bytes, state.cue_bytes, state.end_seconds) as view:
                made = make_thumbnail(view, live.poster, self.thumbnail_offset, self.thumbnail_width, growing=True)
            if made is None:
                return
            state.poster = {"offset": self.thumbnail_offset, "maxWidth": self.thumbnail_width, "width": made.width,
                            "height": made.height, "seconds": made.seconds, "sha256": sha256_file(made.path)}
        except Exception as exc:  # noqa: BLE001 - a poster is optional: whatever fails here, stop makes it as before
            log.info("recording %s participant %s: poster not taken while recording (at stop instead): %s",
                     recording_id, participant_id, exc.message if isinstance(exc, MediaError) else repr(exc))
            return
        self.states.put(recording_id, participant_id, state)

    def _poster_wanted(self, state: LiveState) -> dict | None:
        """The poster the state records, when it was made for the current settings."""
        poster = state.poster
        if poster is None or poster.get("offset") != self.thumbnail_offset \
                or poster.get("maxWidth") != self.thumbnail_width:
            return None
        return poster

    def _kept_poster(self, recording_id: str, participant_id: str, state: LiveState) -> Thumbnail | None:
        """At stop: the poster taken while recording, when its JPEG is still the one written; else None, and it
        is made from the closed file (a recording shorter than the offset, or a lost or damaged JPEG)."""
        poster = self._poster_wanted(state)
        if poster is None or self.thumbnail_width <= 0:
            return None
        path = self._file(recording_id, participant_id, EXTENSIONS[state.output_fmt]).poster
        kept = checked_thumbnail(path, poster["width"], poster["height"], poster["seconds"], poster["sha256"])
        if kept is None:
            log.warning("recording %s participant %s: the poster taken while recording is missing or damaged, made "
                        "again at stop", recording_id, participant_id)
        return kept

    def _send_ahead(self, recording_id: str, rec: RecordingHash, participant_id: str, state: LiveState) -> None:
        """Upload the output's parts that are final already (complete, past the header's space) to a provider that
        takes parts ahead (its upload_ahead: S3, GCS, Vercel Blob); finalize after stop sends the header's part and
        the tail, and completes. A failure here costs nothing but time: the parts not sent go at stop."""
        send = getattr(self.provider, "upload_ahead", None)
        if send is None or getattr(getattr(self.provider, "settings", None), "part_size", None) != self.part_size:
            return
        if state.transcode is not None:  # `format: mp4`: the MP4's body, whose parts 2, 3, ... are the file's
            if state.mp4 is None:
                return  # no MP4 written while recording: the stored object is made from the Matroska at stop
            extension, path = "mp4", self._mp4_file(recording_id, participant_id).path
            numbers = list(range(2, state.mp4.body // self.part_size + 1))
        else:
            extension = EXTENSIONS[state.tracks.fmt]
            path = self._file(recording_id, participant_id, extension).path
            first = -(-RESERVED_BYTES // self.part_size)
            numbers = [k + 1 for k in range(first, state.bytes // self.part_size)]
        if not numbers:
            return
        key = f"{object_prefix(rec['room'], recording_id)}{participant_id}.{extension}"
        try:
            send(key, path, numbers, content_type=CONTENT_TYPES.get(extension, "application/octet-stream"),
                 metadata={"recording-id": recording_id, "room": rec["room"], "participant": participant_id},
                 checkpoint=RedisCheckpoint(self.store.redis, recording_id, key), limit=MAX_AHEAD_PARTS)
        except (StorageError, OSError, ValueError) as exc:
            log.warning("recording %s participant %s: parts not sent ahead (sent at stop): %s", recording_id,
                        participant_id, exc)

    def _check(self, rec: RecordingHash) -> None:
        if not isinstance(self.staging, ChunkStaging):
            raise Unsupported("object-store staging: live steps could run on nodes that do not share a disk")

    def _joining(self, recording_id: str, participant_id: str, state: LiveState, types: list[str]) -> frozenset[str]:
        """Streams that began after the first window: they join the state (its streams kept in batch order), and
        the window checks that their media comes after what was folded (else batch, which merges it earlier).
        While the output is shorter than one part (nothing hashed or sent ahead), _step_locked begins it again with
        every stream instead: a stream whose first chunk came a step late is then folded from its start."""
        if list(state.streams) == types:
            return frozenset()
        if any(t not in types for t in state.streams):
            raise Unsupported("a stream of the live output is gone")
        if state.transcode is not None:
            raise Unsupported("a stream began after the first window of a transcoded output")
        joining = [t for t in types if t not in state.streams]
        joined = self._new_state(recording_id, participant_id, joining).streams
        state.streams = {t: state.streams[t] if t in state.streams else joined[t] for t in types}
        return frozenset(joining)

    def _fold(self, recording_id: str, participant_id: str, state: LiveState, final: bool,
              capped: bool = True, joining: frozenset[str] = frozenset()) -> bool:
        """One window: each stream's new complete Clusters, merged up to the earliest time every stream has
        reached (the next Cluster's Timestamp of the stream that is furthest behind); what lies beyond waits.
        True when a restarted recorder ended the window before the chunks read did."""
        work = self._work_dir(recording_id)
        cap = (MAX_TRANSCODE_CHUNKS if state.transcode is not None else MAX_WINDOW_CHUNKS) if capped else None
        single = len(state.streams) == 1
        cuts = [self._stream_window(recording_id, participant_id, stream_type, cursor, final, cap, work, single)
                for stream_type, cursor in state.streams.items()]
        until = math.inf if final or len(cuts) == 1 else min(cut.until for cut in cuts)
        skips = [cut.source.body_at + state.streams[cut.source.stream_type].skip if cut.chunks else 0 for cut in cuts]
        try:
            if state.transcode is not None and any(cut.run_ends or cut.source.offset is None for cut in cuts):
                raise Unsupported("a restarted recorder in a transcoded output")
            window = remux_window([cut.source for cut in cuts], work / f"{participant_id}.out.mkv", state.tracks,
                                  final, until, skips, joining)
            if window.written:
                self._append(recording_id, participant_id, state, window, work / f"{participant_id}.out.mkv", final)
            elif not state.windows:
                raise NotYet("no media yet")
        finally:
            for cut in cuts:
                cut.source.path.unlink(missing_ok=True)
            (work / f"{participant_id}.out.mkv").unlink(missing_ok=True)
            (work / f"{participant_id}.out.h264.mkv").unlink(missing_ok=True)
        if window.added:
            state.poster = None  # a joined stream may change which video track the finished file lists first
        if window.added or len(state.infos) != len(window.infos):
            state.infos = [dict(info.__dict__) for info in window.infos]
        else:  # the first run's facts (a restarted recorder's may differ), as batch reports them
            state.infos = [info | {"packets": new.packets} for info, new in zip(state.infos, window.infos)]
        for cut, offset, ends, clock, repairs in zip(cuts, window.offsets, window.lane_ends, window.clocks,
                                                     window.repairs):
            cursor = state.streams[cut.source.stream_type]
            cursor.run_offset = offset
            cursor.lane_ends.update(ends)
            cursor.repairs += repairs
            if cut.source.clock is not None:
                cursor.clock = clock
        for cut, waiting in zip(cuts, window.deferred):
            if cut.chunks:
                cursor = state.streams[cut.source.stream_type]
                resume, cursor.skip = cut.resume(waiting)
                cursor.sequence, cursor.offset, cursor.position = locate(cut.chunks, resume)
                cursor.run_bytes += sum(path.stat().st_size for sequence, path in cut.chunks
                                        if sequence < cursor.sequence)
        state.windows += 1 if window.written else 0  # appended windows: the live files and contexts count them
        self.states.put(recording_id, participant_id, state)
        if window.written:
            self._context(recording_id, participant_id, state.windows - 1).unlink(missing_ok=True)
        return any(cut.run_ends for cut in cuts)

    def _append(self, recording_id: str, participant_id: str, state: LiveState, window: Window, folded: Path,
                final: bool) -> None:
        """The remuxed window (transcoded first for `format: mp4`) appended to the live output, and to the MP4
        written while recording."""
        captured = Captured() if state.transcode is not None and (not state.windows or state.mp4) else None
        if state.transcode is not None:
            folded = self._transcoded(recording_id, participant_id, state, folded, final, captured)
        live = self._file(recording_id, participant_id, EXTENSIONS[state.output_fmt])
        appended = live.append(folded, state.output_fmt, state.bytes,
                               state.cue_bytes, window.numbers if state.windows else None, window.added)
        if captured is not None:
            state.mp4 = self._mp4_appended(recording_id, participant_id, state, captured, folded)
        state.bytes, state.cue_bytes = appended.bytes, appended.cue_bytes
        state.end_seconds = max(state.end_seconds, appended.end_seconds)

    def _transcoded(self, recording_id: str, participant_id: str, state: LiveState, window: Path, final: bool,
                    captured: Captured | None = None) -> Path:
        """`format: mp4`: the remuxed window transcoded to H.264/AAC (workers/live/transcode.py), decoding from the
        context the last window left (the packets since the last keyframe); its own context is kept for the next
        window under the window count the state will have, so a step killed before saving the state is redone."""
        carry: TranscodeCarry = state.transcode  # type: ignore[assignment]
        needed = state.windows and "transcode" in carry.methods  # tracks all copied (Safari's H.264/AAC): none
        context = self._context(recording_id, participant_id, state.windows) if needed else None
        if context is not None and not context.exists():
            raise Unsupported("the live transcode's context file is missing")
        target = window.with_name(f"{participant_id}.out.h264.mkv")
        transcode_window(window, context, target, self._context(recording_id, participant_id, state.windows + 1),
                         carry, self.mp4, final, captured)
        return target

    def _mp4_appended(self, recording_id: str, participant_id: str, state: LiveState, captured: Captured,
                      window: Path) -> Mp4Progress | None:
        """`format: mp4`: the window's packets appended to the MP4 written while recording (begun with the first
        window, whose transcoded Matroska file `window` gives the copied tracks' parameters); None, and the files
        gone, when it cannot be (encoders that would not match, a copied track whose frames are reordered): stop
        then copies the live Matroska into an MP4, the way it did before there was a live MP4."""
        carry: TranscodeCarry = state.transcode  # type: ignore[assignment]
        output = self._mp4_file(recording_id, participant_id)
        try:
            copied = {i for i, method in enumerate(carry.methods) if method == "copy"}
            if any(p.track in copied and p.dts != p.pts for p in captured.packets):
                # the Matroska demuxer guesses a reordered stream's decode times, window by window: not batch's
                raise Unsupported("a copied track with reordered frames")
            progress = state.mp4
            if progress is None:
                progress = output.begin(captured.sources, captured.packets, self.mp4, carry.keyint, carry.extradata,
                                        window if copied else None)
            return output.append(progress, captured.packets)
        except (Unsupported, MediaError, OSError, ValueError, struct.error) as exc:
            reason = exc.message if isinstance(exc, MediaError) else str(exc)
            log.info("recording %s participant %s: no MP4 written while recording, it is made from the live "
                     "Matroska at stop: %s", recording_id, participant_id, reason)
            output.remove()
            return None

    def _context(self, recording_id: str, participant_id: str, windows: int) -> Path:
        return self._work_dir(recording_id) / f"{participant_id}.context{windows}.mkv"

    def _mp4_output(self, rec: RecordingHash, participant_id: str, muxed: MuxResult,
                    state: LiveState) -> PreparedOutput | None:
        """The MP4 written while recording, closed (its header put in front of the media in place); where there is
        none, the live Matroska copied into one (_mp4_copied)."""
        if state.mp4 is not None:
            closed = self._mp4_closed(rec, participant_id, muxed, state)
            if closed is not None:
                metrics.LIVE_MP4_OUTPUTS.labels("in_place").inc()
                return closed
        copied = self._mp4_copied(rec, participant_id, muxed, state)
        if copied is not None:
            metrics.LIVE_MP4_OUTPUTS.labels("copied").inc()
        return copied

    def _mp4_closed(self, rec: RecordingHash, participant_id: str, muxed: MuxResult,
                    state: LiveState) -> PreparedOutput | None:
        """The live MP4's header written in front of its media (nothing read or copied but the tables and the
        edge packets), with the part checksums hashed while recording; None (the copy instead) when it fails."""
        carry: TranscodeCarry = state.transcode  # type: ignore[assignment]
        progress: Mp4Progress = state.mp4  # type: ignore[assignment]
        output = self._mp4_file(rec["recordingId"], participant_id)
        try:
            closed = output.close(progress, self.mp4, carry.keyint, carry.extradata,
                                  muxed.path if "copy" in carry.methods else None)
        except (Unsupported, OSError, ValueError, struct.error, av.FFmpegError) as exc:
            log.warning("recording %s participant %s: the live MP4 could not be closed, the live Matroska is copied "
                        "into one instead: %s", rec["recordingId"], participant_id, exc)
            return None
        methods = set(carry.methods)
        return PreparedOutput(
            path=closed.path, format="mp4", bytes=closed.bytes, duration_seconds=closed.duration_seconds,
            method=methods.pop() if len(methods) == 1 else "mixed",
            tracks=[{"kind": kind, "codec": codec, "method": method}
                    for (kind, codec), method in zip(closed.streams, carry.methods)],
            segments=muxed.segments, start_seconds=muxed.start_seconds,
            timestamp_repairs=muxed.timestamp_repairs, dropped_packets=muxed.dropped_packets,
            thumbnail=self._kept_poster(rec["recordingId"], participant_id, state)
            or poster_or_none(closed.path, closed.path.with_name(f"{participant_id}.jpg"), self.thumbnail_offset,
                              self.thumbnail_width),
            checksum=closed.checksum,
        )

    def _mp4_copied(self, rec: RecordingHash, participant_id: str, muxed: MuxResult,
                    state: LiveState) -> PreparedOutput | None:
        """The closed live output (H.264/AAC in Matroska) copied into a faststart MP4 by the batch path's own
        to_mp4, which copies codecs that fit: a remux, no re-encode after stop. The poster taken while recording
        from the Matroska output is the frame, and the JPEG, that the MP4 gives (the same packets)."""
        carry: TranscodeCarry = state.transcode  # type: ignore[assignment]
        try:
            converted = to_mp4(muxed.path, self.staging.output_dir(rec["recordingId"]), participant_id, self.mp4)
        except MediaError as exc:
            log.warning("recording %s participant %s: live MP4 not made, batch instead: %s", rec["recordingId"],
                        participant_id, exc.message)
            return None
        tracks = [track | {"method": method} for track, method in zip(converted.tracks, carry.methods)]
        methods = set(carry.methods)
        return PreparedOutput(
            path=converted.path, format="mp4", bytes=converted.bytes, duration_seconds=converted.duration_seconds,
            method=methods.pop() if len(methods) == 1 else "mixed", tracks=tracks, segments=muxed.segments,
            start_seconds=muxed.start_seconds, timestamp_repairs=muxed.timestamp_repairs,
            dropped_packets=muxed.dropped_packets,
            thumbnail=self._kept_poster(rec["recordingId"], participant_id, state)
            or poster_or_none(converted.path, converted.path.with_name(f"{participant_id}.jpg"),
                              self.thumbnail_offset, self.thumbnail_width),
        )

    def _stream_window(self, recording_id: str, participant_id: str, stream_type: str, cursor: Cursor,
                       final: bool, cap: int | None, work: Path, single: bool = True) -> _StreamCut:
        """One stream's window file: its header and its complete Clusters from the cursor on (at most `cap`
        chunks). A window never crosses a restarted recorder's header: the run before it ends the window, and the
        next window begins the new run with its own header (`single`: only a participant's only stream may)."""
        chunks = contiguous(self.store, self.staging, recording_id, participant_id, stream_type, cursor, final, cap)
        if not chunks and not final:
            raise NotYet(f"no new {stream_type} chunk")
        if chunks and cursor.offset == 0 and chunks[0][0] != cursor.run_first and starts_run(chunks[0][1]):
            _next_run(cursor, chunks[0][0], single)
        restart = next((i for i, (_, chunk) in enumerate(chunks) if i and starts_run(chunk)), None)
        if restart is not None:  # a restarted recorder: this window ends with the run before it, complete
            if not single:
                raise Unsupported("a restarted recorder in one of several streams")
            chunks = chunks[:restart]
        path = work / f"{participant_id}.{stream_type}.in"
        with open_chunks(header_chunks(self.store, self.staging, recording_id, participant_id, stream_type, cursor,
                                       MAX_WINDOW_CHUNKS)) as head:
            layout = layout_of(head)
            if layout is FRAGMENTED and not single:
                raise Unsupported("fragmented MP4 in one of several streams")
            if not cursor.header:
                cursor.header = layout.header_length(head)
            if not chunks:  # at stop, nothing new in this stream: its header alone, for its tracks
                body_at = layout.write(head, cursor.header, head, 0, 0, path)
                return _StreamCut(WindowSource(stream_type, cursor.sequence, path, body_at, cursor.run_offset,
                                               cursor.ended, cursor.clock if single else None), [], 0, 0, math.inf,
                                  [])
            with open_chunks(chunks) as body:
                size = body.raw.size  # type: ignore[attr-defined]
                start = max(cursor.offset, cursor.header) if cursor.sequence == cursor.run_first else cursor.offset
                clusters: list[int] = []
                if final or restart is not None:
                    cut, until = size, math.inf
                elif layout.holds_back_last:
                    scan = layout.scan(body, start, size)
                    if len(scan.clusters) < 2:
                        raise NotYet(f"no complete {stream_type} Cluster yet")
                    clusters, cut, until = scan.clusters, scan.clusters[-1], scan.times[-2]
                else:  # fragments: complete once their mdat ends (a single stream: no time to stop at)
                    scan = layout.scan(body, start, size)
                    if scan.end == start:
                        raise NotYet(f"no complete {stream_type} fragment yet")
                    clusters, cut, until = scan.clusters, scan.end, math.inf
                body_at = layout.write(head, cursor.header, body, start, cut, path)
        source = WindowSource(stream_type, chunks[0][0], path, body_at, cursor.run_offset, cursor.ended,
                              cursor.clock if single else None, start + cursor.run_bytes - body_at)
        return _StreamCut(source, chunks, start, cut, until, clusters, restart is not None)

    def _batch_would_cut(self, rec: RecordingHash, participant_id: str, types: list[str]) -> bool:
        """Whether batch would cut paused media out of this participant (a client that kept recording through a
        pause): the same decision finalize makes, from every chunk's timestamp, so it waits for stop. A client
        that paused its own recorder (the browser module) has nothing cut, and its live output stands. Only a
        recording that was paused reads the whole index here."""
        pauses = parse_pauses(rec.get("pauses"))
        if not pauses:
            return False
        streams = {t: self.store.chunks(rec["recordingId"], participant_id, t) for t in types}
        facts = self.store.index.facts(rec["recordingId"], [(participant_id, t) for t in streams])
        cuts = stream_cuts(pauses, streams, {t: fact.skew_ms for (_, t), fact in facts.items()})
        return any(cut.for_segment(sorted(streams[t]), 0.0) is not None for t, cut in cuts.items())

    def _new_state(self, recording_id: str, participant_id: str, types: list[str], mp4: bool = False) -> LiveState:
        """Begin each stream at its first sequence: 0, or the lowest one when it holds a header (clients that
        count from 1); a chunk arriving below it later makes the result unusable, and batch takes over."""
        facts = self.store.index.facts(recording_id, [(participant_id, t) for t in types])
        firsts = {t: facts[(participant_id, t)].first or 0 for t in types}
        return LiveState({t: Cursor(sequence=firsts[t], first=firsts[t], clock={}) for t in types}, host=HOST,
                         transcode=TranscodeCarry() if mp4 else None)

    def _file(self, recording_id: str, participant_id: str, extension: str) -> LiveFile:
        return LiveFile(self._work_dir(recording_id), participant_id, extension, self.part_size)

    def _mp4_file(self, recording_id: str, participant_id: str) -> LiveMp4:
        return LiveMp4(self._work_dir(recording_id), participant_id, self.part_size)

    def _work_dir(self, recording_id: str) -> Path:
        path = self.staging.output_dir(recording_id) / "live"
        path.mkdir(parents=True, exist_ok=True)
        return path
