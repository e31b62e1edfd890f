"""Which chunk files a live step reads: the run from the live position to the first hole, the chunks holding
the stream's header, and a reader over them; the index is read from the position on, never whole."""
from __future__ import annotations

import io
from pathlib import Path

from workers import keys
from workers.live.source import NotYet, Unsupported
from workers.live.state import Cursor
from workers.media.chunk_stream import ChunkStream
from workers.staging import Staging
from workers.state import ChunkRecord, RecordingStore

BUFFER_BYTES = 64 * 1024
"""Read-ahead over the chunk files: element headers are read a few bytes at a time."""

INDEX_BATCH = 256
"""Chunk index entries read per HMGET."""

HEADER_BATCH = 4
"""Chunk index entries read per HMGET for a header whose length is known (it is rarely past the first chunk)."""


def contiguous(store: RecordingStore, staging: Staging, recording_id: str, participant_id: str, stream_type: str,
               state: Cursor, final: bool, limit: int | None) -> list[tuple[int, Path]]:
    """The chunks from the live position on, up to the first hole (at stop: every one, or Unsupported).
    Reads only the index entries from the position on, so a step costs the same an hour in."""
    wanted = _run(store, recording_id, participant_id, stream_type, state.sequence,
                  None if final else limit)
    if final:
        facts = store.index.facts(recording_id, [(participant_id, stream_type)])
        last = facts[(participant_id, stream_type)].last
        if last is None or (wanted[-1][0] if wanted else state.sequence - 1) != last:
            raise Unsupported("the stream has holes at stop")
    found = staging.local_chunks(recording_id, participant_id, stream_type, wanted)
    present = []
    for seq, path in found:
        if path is None:
            if final:
                raise Unsupported(f"chunk {seq} is not on this worker's disk")
            break
        present.append((seq, path))
    return present


def header_chunks(store: RecordingStore, staging: Staging, recording_id: str, participant_id: str,
                  stream_type: str, state: Cursor, limit: int) -> list[tuple[int, Path]]:
    """The chunks from the first of the recorder run's holding its header (all of the first ones until it is
    known)."""
    wanted = _run(store, recording_id, participant_id, stream_type, state.run_first, limit,
                  until_bytes=state.header or None)
    found = staging.local_chunks(recording_id, participant_id, stream_type, wanted)
    if not found or any(path is None for _, path in found):
        raise Unsupported("the stream's header chunks are not on this worker's disk")
    return [(seq, path) for seq, path in found]  # type: ignore[misc]


def _run(store: RecordingStore, recording_id: str, participant_id: str, stream_type: str, first: int,
         limit: int | None, until_bytes: int | None = None) -> list[tuple[int, str, int]]:
    """(sequence, name, size) of the indexed chunks from `first` up to the first one missing, read in pieces
    of INDEX_BATCH (HMGET), never the whole index. `until_bytes`: stop once the chunks read hold that many bytes
    (a known header: usually in the first chunk, so a step reads a few entries for it, not a window's worth)."""
    key = keys.stream_chunks(recording_id, participant_id, stream_type)
    out: list[tuple[int, str, int]] = []
    sequence, total = first, 0
    while limit is None or len(out) < limit:
        batch = HEADER_BATCH if until_bytes is not None else INDEX_BATCH
        batch = batch if limit is None else min(batch, limit - len(out))
        for raw in store.redis.hmget(key, [str(n) for n in range(sequence, sequence + batch)]):
            if raw is None:
                return out
            record = ChunkRecord.decode(raw.decode())
            out.append((sequence, record.name, record.size))
            sequence, total = sequence + 1, total + record.size
            if until_bytes is not None and total >= until_bytes:
                return out
    return out


class open_chunks:  # noqa: N801 - used as a context manager, like open()
    """A buffered reader over chunk files (EBML headers may straddle two of them)."""

    def __init__(self, chunks: list[tuple[int, Path]]) -> None:
        if not chunks:
            raise NotYet("no chunk yet")
        self.reader = io.BufferedReader(ChunkStream([p for _, p in chunks], [s for s, _ in chunks]), BUFFER_BYTES)

    def __enter__(self) -> io.BufferedReader:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def locate(chunks: list[tuple[int, Path]], cut: int) -> tuple[int, int, int]:
    """(sequence, offset) of byte `cut` of the chunks' concatenation, and the last sequence wholly before it."""
    total = 0
    for sequence, path in chunks:
        size = path.stat().st_size
        if cut < total + size:
            return sequence, cut - total, sequence - 1
        total += size
    last = chunks[-1][0]
    return last + 1, 0, last
