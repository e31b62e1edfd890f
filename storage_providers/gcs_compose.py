"""GCS parts uploaded while a live output is still written, composed server-side into the final object at stop.

GCS has no multipart upload whose parts can arrive in any order; it has compose: up to 32 objects of the bucket
concatenated into a new one, without the bytes passing through us. So each part of the live output that is final
already (complete, past the header's reserved space) is uploaded as its own temporary object, under a hidden
prefix next to the final key (`<key>.tapedeck-parts/<upload-id>/`), and folded at once into one growing temporary
`body` object. At stop only part 1 (the header region, rewritten at stop) and the tail are uploaded; one compose
of [part 1, body, tail...] writes the final key, with the object's metadata and `ifGenerationMatch=0` so nothing
partial is ever visible there and a retry cannot write it twice. The temporaries are deleted after.

Trust: each temporary's CRC32C is checked by GCS against ours, every source of a compose is named by generation
(with `ifGenerationMatch` preconditions, and checked by a GET first, as the emulator ignores preconditions), and
the SHA-256 of every part is kept in the checkpoint, so at stop the part digests of what would be composed must
give the composite of the file's `sha256-parts` metadata. Anything that does not match raises NotAdoptable and
the provider uploads the file whole as before.

The same Redis upload checkpoint as the resumable session holds the state (small: a digest per part). Compose
calls are logged with their duration (event `gcs_compose`), so a benchmark can time the server's work apart.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from storage_providers.base import (
    ChecksumMismatchError,
    IncompleteUpload,
    ProgressCallback,
    UploadCheckpoint,
    complete_parts_ahead,
    count_parts,
    parse_metadata,
    part_span,
    parts_in_flight,
    put_parts_concurrently,
)
from storage_providers.gcs_resumable import SDK_RETRY_SECONDS, attach_session, sdk_retry

log = logging.getLogger(__name__)

PARTS_MARK = ".tapedeck-parts/"
"""Temporaries live under `<final key>.tapedeck-parts/<upload-id>/`: under the recording's prefix, so purge (which
lists it) deletes them; never named by an output or the manifest, so no listing of recordings shows them."""

PARTS_GLOB = f"**{PARTS_MARK}**"
"""matchGlob of every temporary, for beat's listing of abandoned ones (GCS objects.list matchGlob)."""

MAX_SOURCES = 32
"""GCS composes at most 32 objects in one call."""

CHUNK_ALIGN = 256 * 1024
"""A resumable chunk is a multiple of 256 KiB (the last one excepted)."""

IN_FLIGHT = 4
"""Requests sent at once at stop: part 1 and the tail go up while the temporaries are checked, and the temporaries
are deleted together. The client is shared between the threads, as google-cloud-storage's own transfer_manager
shares one."""

PARTS_METADATA = "sha256-parts"
"""The live output's checksum metadata, `<partSize>:<composite hex>` (workers/live/checksum.py)."""


class NotAdoptable(Exception):
    """Raised when the parts sent ahead cannot make this file (missing, replaced, other bytes, other part size)."""


@dataclass(frozen=True)
class _Piece:
    """One source of the final compose: a temporary object holding parts first..last."""

    name: str
    generation: int
    first: int
    last: int


def parts_prefix(full_key: str, upload_id: str) -> str:
    return f"{full_key}{PARTS_MARK}{upload_id}/"


def final_key(temporary: str) -> str | None:
    """The final object key a temporary belongs to, or None for any other object."""
    head, mark, _ = temporary.partition(PARTS_MARK)
    return head if mark else None


@dataclass(frozen=True)
class ComposeUploader:
    """One bucket's parts-ahead uploads over one client; SDK errors pass through untranslated."""

    bucket: Any
    """A google.cloud.storage Bucket."""
    transport: Any
    """The provider's AuthorizedSession, for the parts' resumable sessions."""
    part_size: int
    provider: str = "gcs"

    # -- while recording ---------------------------------------------------------------------------------------

    def owns(self, state: dict | None, full_key: str) -> bool:
        """Whether a checkpoint holds parts sent ahead of this key (not a resumable session, not another key)."""
        return bool(state) and bool(state.get("ahead")) and state.get("provider") == self.provider \
            and state.get("bucket") == self.bucket.name and state.get("key") == full_key  # type: ignore[union-attr]

    def upload_ahead(self, full_key: str, path: Path, numbers: list[int], content_type: str,
                     checkpoint: UploadCheckpoint, limit: int | None = None) -> int:
        """Upload the given parts (final bytes already) as temporaries, then fold the run after the body into it.
        Returns how many parts were uploaded now (at most `limit`)."""
        state = checkpoint.load()
        if not self.owns(state, full_key) or state.get("part_size") != self.part_size:  # type: ignore[union-attr]
            if state:
                return 0  # another upload of this key (a finalize's): not ours to touch
            state = {"provider": self.provider, "bucket": self.bucket.name, "key": full_key, "ahead": True,
                     "part_size": self.part_size, "upload_id": uuid.uuid4().hex, "body": None, "parts": []}
            checkpoint.save(state)
        assert state is not None
        sent = 0
        for number, chunk in complete_parts_ahead(path, numbers, self._held(state), self.part_size, limit):
            state["parts"].append(self._put_part(state, number, chunk, content_type))
            checkpoint.save(state)
            sent += 1
        self._fold(state, content_type, checkpoint)
        return sent

    def _held(self, state: dict) -> set[int]:
        body = state.get("body")
        numbers = {p["number"] for p in state["parts"]}
        return numbers | (set(range(body["first"], body["last"] + 1)) if body else set())

    def _put_part(self, state: dict, number: int, chunk: bytes, content_type: str) -> dict:
        """One temporary, through a one-chunk resumable session (the emulator parses a multipart upload's body with
        the email module, seconds per 8 MiB, which would be its cost counted as ours); google-resumable-media checks
        the CRC32C GCS answers against the bytes sent, and so do we."""
        import google_crc32c

        blob = self.bucket.blob(f"{parts_prefix(state['key'], state['upload_id'])}{number}")
        crc = base64.b64encode(google_crc32c.Checksum(chunk).digest()).decode()
        blob.crc32c = crc
        url = blob.create_resumable_upload_session(content_type=content_type, size=len(chunk), checksum=None,
                                                   retry=sdk_retry())
        upload = attach_session(url, -(-max(1, len(chunk)) // CHUNK_ALIGN) * CHUNK_ALIGN, io.BytesIO(chunk),
                                len(chunk), content_type)
        response = None
        while not upload.finished:
            response = upload.transmit_next_chunk(self.transport, timeout=SDK_RETRY_SECONDS * 2)
        stored = response.json() if response is not None else {}
        if stored.get("crc32c") != crc or int(stored.get("size") or 0) != len(chunk):
            raise ChecksumMismatchError(f"gcs stored different bytes for {blob.name!r}")
        return {"number": number, "generation": int(stored["generation"]),
                "sha256": hashlib.sha256(chunk).hexdigest()}

    def _fold(self, state: dict, content_type: str, checkpoint: UploadCheckpoint) -> None:
        """Compose the body with the parts that continue it (one call, <= 32 sources) and delete those parts, so
        what is left at stop stays a few objects however long the recording. A body that is not the one the
        checkpoint knows (a step killed between compose and save) makes the whole upload suspect: it is dropped,
        and its parts go again later or at stop."""
        body = state.get("body")
        by_number = {p["number"]: p for p in state["parts"]}
        start = body["last"] + 1 if body else min(by_number, default=0)
        run = []
        while start + len(run) in by_number and len(run) < MAX_SOURCES - (1 if body else 0):
            run.append(by_number[start + len(run)])
        if not run:
            return
        name = f"{parts_prefix(state['key'], state['upload_id'])}body"
        sources = [_Piece(name, body["generation"], body["first"], body["last"])] if body else []
        sources += [self._part_piece(state, p) for p in run]
        from google.api_core import exceptions as api

        try:
            if body and not self._unchanged(sources[0]):
                raise api.PreconditionFailed("body generation")
            composed = self._compose(name, sources, content_type, None,
                                     if_generation_match=body["generation"] if body else 0)
        except (api.PreconditionFailed, api.NotFound):
            log.warning("gcs parts sent ahead of %s: not as the checkpoint says (a step killed between compose and "
                        "save?), dropped; they go again", state["key"])
            self.discard(state)
            checkpoint.clear()
            return
        state["body"] = {"first": sources[0].first, "last": run[-1]["number"], "generation": int(composed.generation),
                         "digests": (body["digests"] if body else []) + [p["sha256"] for p in run]}
        state["parts"] = [p for p in state["parts"] if p not in run]
        checkpoint.save(state)
        for part in run:
            self._delete(self._part_piece(state, part).name, part["generation"])

    # -- at stop -----------------------------------------------------------------------------------------------

    def complete(self, full_key: str, path: Path, total: int, content_type: str, meta: dict[str, str],
                 progress: ProgressCallback | None, checkpoint: UploadCheckpoint) -> None:
        """Write the final object from the parts sent ahead plus part 1 and the tail, then delete the temporaries.
        Raises NotAdoptable (having changed nothing at the final key) when they cannot make this file."""
        state = checkpoint.load()
        if not self.owns(state, full_key):
            raise NotAdoptable("no parts were sent ahead of this key")
        assert state is not None
        if state.get("composed"):  # a retry after the final compose: only the cleanup was left
            self._finish_composed(state, full_key, total, meta, checkpoint)
            return
        size, head, composite = _parts_metadata(meta)
        if size != self.part_size or state.get("part_size") != self.part_size:
            raise NotAdoptable(f"part size {size} is not {self.part_size}")
        state["head"] = head  # a live MP4's header makes part 1 longer: where each part lies in the file
        count = count_parts(total, self.part_size, head)
        pieces, digests = self._known_pieces(state, count)
        sent = sum(self._length(p, total, head) for p in pieces)
        if progress and sent:
            progress(sent, total)
        covered = {n for p in pieces for n in range(p.first, p.last + 1)}
        missing = [n for n in range(1, count + 1) if n not in covered]
        with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="gcs-parts") as pool:
            checks = [(piece, pool.submit(self._unchanged, piece, self._length(piece, total, head)))
                      for piece in pieces]
            for part, length in self._put_parts(state, path, missing, content_type, checkpoint, pool):
                pieces.append(self._part_piece(state, part))
                digests[part["number"]] = part["sha256"]
                sent += length
                if progress:
                    progress(sent, total)
            for piece, check in checks:
                if not check.result():
                    raise NotAdoptable(f"{piece.name} is gone or was replaced")
        joined = b"".join(bytes.fromhex(digests[n]) for n in range(1, count + 1))
        if hashlib.sha256(joined).hexdigest() != composite:
            raise NotAdoptable("the parts sent ahead are not this file's bytes")
        pieces.sort(key=lambda p: p.first)
        sources = self._reduce(state, pieces, content_type)
        from google.api_core import exceptions as api

        try:
            blob = self._compose(full_key, sources, content_type, meta, if_generation_match=0)
        except api.NotFound as exc:
            raise NotAdoptable(f"a part sent ahead is gone: {exc.message}") from None
        except api.PreconditionFailed:  # the final key exists: ours from a compose whose answer was lost?
            blob = self.bucket.get_blob(full_key, retry=sdk_retry())
            if blob is None or not _is_ours(blob, total, meta):
                raise NotAdoptable("another object is at the final key") from None
        if int(blob.size or 0) != total:
            self._delete(full_key, int(blob.generation))
            raise ChecksumMismatchError(f"gcs composed {blob.size} bytes for {full_key!r}, not {total}")
        state["composed"] = int(blob.generation)
        checkpoint.save(state)
        self.discard(state)
        checkpoint.clear()

    def _finish_composed(self, state: dict, full_key: str, total: int, meta: dict[str, str],
                         checkpoint: UploadCheckpoint) -> None:
        blob = self.bucket.get_blob(full_key, retry=sdk_retry())
        if blob is None or int(blob.generation) != state["composed"] or not _is_ours(blob, total, meta):
            raise NotAdoptable("the composed object changed since")
        self.discard(state)
        checkpoint.clear()

    def _known_pieces(self, state: dict, count: int) -> tuple[list[_Piece], dict[int, str]]:
        """The body and parts the checkpoint knows, with their part digests (complete checks with GCS that each is
        still stored at its generation and size, beside the parts it uploads). Part 1 is never sent ahead; a piece
        past the file's end means another file."""
        pieces: list[_Piece] = []
        digests: dict[int, str] = {}
        body = state.get("body")
        if body:
            name = f"{parts_prefix(state['key'], state['upload_id'])}body"
            pieces.append(_Piece(name, body["generation"], body["first"], body["last"]))
            digests.update(zip(range(body["first"], body["last"] + 1), body["digests"]))
        for part in state["parts"]:
            if part["number"] in digests:
                continue  # folded into the body already (a step killed before it deleted the part)
            pieces.append(self._part_piece(state, part))
            digests[part["number"]] = part["sha256"]
        for piece in pieces:
            if piece.first < 2 or piece.last > count:
                raise NotAdoptable(f"parts {piece.first}-{piece.last} do not fit a file of {count} parts")
        return pieces, digests

    def _put_parts(self, state: dict, path: Path, numbers: list[int], content_type: str,
                   checkpoint: UploadCheckpoint, pool: ThreadPoolExecutor) -> Iterator[tuple[dict, int]]:
        """Upload these parts of the file as temporaries, several at once on `pool`; each is added to the state and
        the checkpoint saved as it is confirmed, then yielded with its length. On a failure the parts not started
        are dropped, those running are waited for and kept, and the first error is raised."""
        for part, length in put_parts_concurrently(
                path, numbers, lambda fd, number: self._read_and_put(state, fd, number, content_type), pool,
                parts_in_flight(self.part_size)):
            state["parts"].append(part)
            checkpoint.save(state)
            yield part, length

    def _read_and_put(self, state: dict, fd: int, number: int, content_type: str) -> tuple[dict, int]:
        """One part read at its offset (pread: no shared file position between threads) and uploaded."""
        offset, length = part_span(number, _file_size(fd), self.part_size, state.get("head", 0))
        chunk = os.pread(fd, length, offset)
        return self._put_part(state, number, chunk, content_type), len(chunk)

    def _reduce(self, state: dict, pieces: list[_Piece], content_type: str) -> list[_Piece]:
        """At most 32 sources for the final compose: longer runs (a backlog never sent ahead) are joined first."""
        level = 0
        while len(pieces) > MAX_SOURCES:
            joined = []
            for index in range(0, len(pieces), MAX_SOURCES):
                group = pieces[index:index + MAX_SOURCES]
                name = f"{parts_prefix(state['key'], state['upload_id'])}join-{level}-{index}"
                blob = self._compose(name, group, content_type, None, if_generation_match=None)
                joined.append(_Piece(name, int(blob.generation), group[0].first, group[-1].last))
            pieces, level = joined, level + 1
        return pieces

    def _length(self, piece: _Piece, total: int, head: int = 0) -> int:
        start = part_span(piece.first, total, self.part_size, head)[0]
        end = sum(part_span(piece.last, total, self.part_size, head))
        return end - start

    # -- shared ------------------------------------------------------------------------------------------------

    def _part_piece(self, state: dict, part: dict) -> _Piece:
        name = f"{parts_prefix(state['key'], state['upload_id'])}{part['number']}"
        return _Piece(name, part["generation"], part["number"], part["number"])

    def _unchanged(self, piece: _Piece, size: int | None = None) -> bool:
        """The object still holds the generation we composed or uploaded (and the size we expect)."""
        blob = self.bucket.get_blob(piece.name, retry=sdk_retry())
        return blob is not None and int(blob.generation) == piece.generation \
            and (size is None or int(blob.size or 0) == size)

    def _compose(self, name: str, sources: list[_Piece], content_type: str, meta: dict[str, str] | None,
                 if_generation_match: int | None) -> Any:
        """One compose call, every source named by generation and preconditioned on it; timed for benchmarks."""
        blob = self.bucket.blob(name)
        blob.content_type = content_type
        if meta is not None:
            blob.metadata = meta
        started = time.perf_counter()
        blob.compose([self.bucket.blob(p.name, generation=p.generation) for p in sources],
                     if_generation_match=if_generation_match,
                     if_source_generation_match=[p.generation for p in sources], retry=sdk_retry())
        seconds = time.perf_counter() - started
        log.info("gcs compose of %d sources into %s: %.3f s", len(sources), name, seconds,
                 extra={"event": "gcs_compose", "key": name, "sources": len(sources), "seconds": round(seconds, 6),
                        "final": meta is not None})
        return blob

    def _delete(self, name: str, generation: int | None = None) -> None:
        from google.api_core import exceptions as api

        try:
            self.bucket.blob(name).delete(if_generation_match=generation, retry=sdk_retry())
        except (api.NotFound, api.PreconditionFailed):
            pass

    def discard(self, state: dict) -> None:
        """Delete every temporary of the upload a checkpoint describes (listed, so parts a killed step uploaded
        after its last save go too); never the final object."""
        if state.get("provider") != self.provider or not state.get("upload_id") or not state.get("key"):
            return
        self.delete_prefix(parts_prefix(state["key"], state["upload_id"]))

    def delete_prefix(self, prefix: str) -> None:
        if PARTS_MARK not in prefix:
            raise ValueError(f"{prefix!r} is not a parts prefix")
        names = [blob.name for blob in self.bucket.client.list_blobs(self.bucket.name, prefix=prefix,
                                                                     retry=sdk_retry())]
        if len(names) < 2:
            for name in names:
                self._delete(name)
            return
        with ThreadPoolExecutor(max_workers=min(IN_FLIGHT, len(names)), thread_name_prefix="gcs-delete") as pool:
            for done in [pool.submit(self._delete, name) for name in names]:
                done.result()

    def incomplete(self, prefix: str) -> Iterator[IncompleteUpload]:
        """The uploads whose temporaries are stored under prefix: (final key, upload id, first temporary's time)."""
        found: dict[tuple[str, str], float] = {}
        for blob in self.bucket.client.list_blobs(self.bucket.name, prefix=prefix or None, match_glob=PARTS_GLOB,
                                                  retry=sdk_retry()):
            key = final_key(blob.name)
            upload_id = blob.name[len(key) + len(PARTS_MARK):].split("/", 1)[0] if key else ""
            if not key or not upload_id:
                continue
            created = blob.time_created.timestamp() if blob.time_created else time.time()
            found[(key, upload_id)] = min(created, found.get((key, upload_id), created))
        for (key, upload_id), created in sorted(found.items()):
            yield IncompleteUpload(key=key, upload_id=upload_id, initiated=created)


def _parts_metadata(meta: dict[str, str]) -> tuple[int, int, str]:
    parsed = parse_metadata(meta.get(PARTS_METADATA, ""))
    if parsed is None:
        raise NotAdoptable(f"no {PARTS_METADATA} metadata")
    return parsed


def _file_size(fd: int) -> int:
    return os.fstat(fd).st_size


def _is_ours(blob: Any, total: int, meta: dict[str, str]) -> bool:
    """The object at the final key is the one this upload composed (its size and part checksum)."""
    return int(blob.size or 0) == total and (blob.metadata or {}).get(PARTS_METADATA) == meta.get(PARTS_METADATA)


__all__ = ["ComposeUploader", "NotAdoptable", "PARTS_MARK", "final_key", "parts_prefix"]
