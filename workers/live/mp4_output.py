"""`format: mp4` written while the room records, so stop costs the same for ten minutes as for two hours.

Each transcoded window's packets (workers/live/transcode.py) go into a media body file as they come, interleaved in
half-second chunks, and each track's sample tables (sizes, sync samples, decode-time and composition-offset runs,
chunk offsets) into small append-only files beside it. At stop the moov is put together from those tables and
written in front of the body in place: the filesystem inserts the header's blocks before the first byte
(fallocate FALLOC_FL_INSERT_RANGE, ext4 and XFS), so no media byte is read or moved; where the filesystem cannot,
the body is copied once behind the header. The result is a faststart MP4 (ftyp, moov, free, mdat).

Everything in the moov but the sample tables is what FFmpeg's MP4 muxer writes for batch's to_mp4: at stop the first
and last packets of each track (kept raw beside the body) are muxed by it, into memory, through streams opened the
way to_mp4 opens them (workers/media/convert.py plan_track: encoders opened from the source streams' parameters,
kept in the state, for the tracks it transcodes; the live Matroska file's stream for those it copies). Its movie,
track and media headers, edit lists and sample descriptions depend only on where each track begins and ends and on
its codec parameters, so they come out as batch's; the last sample's duration is read from its tables, and the bit
rates that count every sample are computed as the muxer computes them. The rest is replaced by the whole
recording's tables. Part checksums: the body's parts are hashed as they complete; they are the finished file's
parts 2, 3, ..., its first part holding the header too (workers/live/checksum.py `head`).

A crash between an append and the state's update is undone by truncating every file to the lengths the state
records; at stop, a header already inserted (a retry) is recognised by the body's length and written again.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import io
import logging
import os
import shutil
import struct
from contextlib import nullcontext
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av

from storage_providers.base import count_parts, part_span
from workers.live.checksum import PART_SIZE, PartChecksum, hash_new_parts, hash_range, stored_digests
from workers.live.source import Unsupported
from workers.media import mp4_boxes as mp4
from workers.media.convert import MP4_COPY_CODECS, plan_track
from workers.media.encoding import Mp4Settings

log = logging.getLogger(__name__)

EDGE_SAMPLES = 16
"""Packets kept raw at each end of each track: more than any reorder depth, so the muxer sees where a track's
presentation begins and ends as it would with every packet."""

CHUNKS_PER_SECOND = 2
"""Interleaving: each track's samples of each half second (on the decode timeline) form one chunk."""

BLOCK = 4096
"""The header is padded (free box) to a multiple of this, the block size FALLOC_FL_INSERT_RANGE needs."""

FALLOC_FL_INSERT_RANGE = 0x20

WIDE_MARGIN = 256 * 1024 * 1024
"""Chunk offsets are 64-bit (co64) when the body comes this close to 4 GiB: decided before the header's length is
known, so both passes that lay out the header agree."""

_RAW = struct.Struct(">BIqqqIIBI")
"""A kept raw packet: track, sample number, pts, dts, duration, time base num/den, keyframe, size; then its bytes."""

_CHUNK = struct.Struct(">QI")
"""A chunk: body offset, samples."""
_CHUNK_OFFSET = struct.Struct(">Q4x")
_CHUNK_COUNT = struct.Struct(">8xI")


@dataclass(frozen=True)
class RawPacket:
    """An encoder's packet as the window's transcode muxed it: original timestamps and bytes (Annex B for H.264)."""

    track: int
    pts: int
    dts: int
    duration: int
    time_base: Fraction
    key: bool
    data: bytes
    number: int = 0
    """Its sample number in the track (0-based), once appended."""


@dataclass
class TrackTable:
    """One track's tables so far: counts and the runs still open (the files hold everything closed)."""

    timescale: int
    annexb: bool
    samples: int = 0
    keys: int = 0
    bytes: int = 0
    chunks: int = 0
    stts_runs: int = 0
    stts_open: list = field(default_factory=lambda: [0, 0])
    ctts_runs: int = 0
    ctts_open: list = field(default_factory=lambda: [0, 0])
    last_dts: int | None = None
    cts_nonzero: bool = False
    cts_negative: bool = False
    stsc_entries: int | None = None
    """Entries in the stsc file (a new one at each chunk whose sample count differs from the chunk before); None in
    a state saved before stsc was kept while recording (rebuilt from the chunk table then, once)."""
    stsc_last: int = 0
    """The last chunk's sample count."""

    def to_json(self) -> list:
        return [self.timescale, self.annexb, self.samples, self.keys, self.bytes, self.chunks, self.stts_runs,
                list(self.stts_open), self.ctts_runs, list(self.ctts_open), self.last_dts, self.cts_nonzero,
                self.cts_negative, self.stsc_entries, self.stsc_last]

    @classmethod
    def from_json(cls, data: list) -> TrackTable:
        return cls(*data)


@dataclass
class Mp4Progress:
    """What the state records of the live MP4: the body's length, each track's tables, windows appended."""

    body: int = 0
    tracks: list[TrackTable] = field(default_factory=list)
    appended: int = 0
    sources: list[dict] = field(default_factory=list)
    """What to_mp4 opens each track's encoder from (workers/media/convert.py plan_track): the window's source
    streams' codec, picture size, time base and channel layout."""

    def to_json(self) -> dict:
        return {"body": self.body, "tracks": [t.to_json() for t in self.tracks], "appended": self.appended,
                "sources": self.sources}

    @classmethod
    def from_json(cls, data: dict) -> Mp4Progress:
        return cls(data["body"], [TrackTable.from_json(t) for t in data["tracks"]], data["appended"],
                   data["sources"])


@dataclass(frozen=True)
class ClosedMp4:
    path: Path
    bytes: int
    duration_seconds: float
    header: int
    """Bytes in front of the media: the file's first part is that much longer than the body's."""
    streams: list[tuple[str, str]]
    """Each track's kind and codec name, as a reader of the file finds them."""
    checksum: PartChecksum
    """Its part checksums: the first part longer by the header (see LiveMp4._checksum)."""


class LiveMp4:
    """The body, the tables and the kept packets of one participant's live MP4, under the live directory."""

    def __init__(self, directory: Path, participant_id: str, part_size: int = PART_SIZE) -> None:
        self.directory = directory
        self.participant_id = participant_id
        self.part_size = part_size
        self.parts = directory / f"{participant_id}.live.mp4.parts"
        """The SHA-256 of each complete part of the body from its second on (32 bytes each; zeros for the
        first, which goes out with the header at stop): the finished file's parts 2, 3, ..."""
        self.path = directory / f"{participant_id}.live.mp4"
        """The body while recording; the whole MP4 once closed (the header inserted in front, in place)."""
        self.head = directory / f"{participant_id}.live.mp4.head"

    def table(self, track: int, kind: str) -> Path:
        return self.directory / f"{self.participant_id}.live.mp4.t{track}.{kind}"

    def tail(self, appended: int) -> Path:
        return self.directory / f"{self.participant_id}.live.mp4.tail{appended}"

    # -- while recording -------------------------------------------------------------------------------------

    def begin(self, sources: list[dict], packets: list[RawPacket], settings: Mp4Settings, keyint: int,
              extradata: list[str], copies: Path | None = None) -> Mp4Progress:
        """The first window, given its source streams (source_params) and packets: keep each track's first
        packets, and learn each track's timescale, and whether its samples need Annex B rewritten, from the muxer
        itself. `copies`: see _mux (needed when a track is copied)."""
        self.remove()
        head = _edges(packets, first=True)
        numbered: list[RawPacket] = []
        counts: dict[int, int] = {}
        for packet in sorted(head, key=_decode_order):
            numbered.append(_numbered(packet, counts.setdefault(packet.track, 0)))
            counts[packet.track] += 1
        _write_raw(self.head, numbered)
        muxed, annexb = _mux(sources, settings, keyint, extradata, numbered, copies)
        tracks = []
        for index, trak in enumerate(_traks(muxed)):
            timescale = struct.unpack_from(">I", muxed, _mdhd_fields(muxed, trak)[1])[0]
            tracks.append(TrackTable(timescale=timescale, annexb=annexb[index], stsc_entries=0))
        if len(tracks) != len(sources):
            raise Unsupported("the MP4 muxer wrote other tracks than the window has")
        return Mp4Progress(tracks=tracks, sources=sources)

    def append(self, progress: Mp4Progress, packets: list[RawPacket]) -> Mp4Progress:
        """Append one window's packets (in decode order); returns the progress to save with the state. Files are
        first cut back to the lengths `progress` records, so a step redone after a crash appends once."""
        state = Mp4Progress.from_json(progress.to_json())
        tracks = state.tracks
        for index, track in enumerate(tracks):
            _cut(self.table(index, "stsz"), 4 * track.samples)
            _cut(self.table(index, "stss"), 4 * track.keys)
            _cut(self.table(index, "stts"), 8 * track.stts_runs)
            _cut(self.table(index, "ctts"), 8 * track.ctts_runs)
            _cut(self.table(index, "chunks"), _CHUNK.size * track.chunks)
            self._ensure_stsc(index, track)
            _cut(self.table(index, "stsc"), 12 * track.stsc_entries)
        _cut(self.path, state.body)
        ordered = sorted(packets, key=_decode_order)
        ticks = [self._ticks(tracks[p.track], p) for p in ordered]
        slices: dict[tuple[int, int], list[int]] = {}
        for k, (packet, (_pts, dts)) in enumerate(zip(ordered, ticks)):
            slot = dts * CHUNKS_PER_SECOND // tracks[packet.track].timescale
            slices.setdefault((slot, packet.track), []).append(k)
        numbered: list[RawPacket] = []
        sizes = {i: array("I") for i in range(len(tracks))}
        keys = {i: array("I") for i in range(len(tracks))}
        stts = {i: bytearray() for i in range(len(tracks))}
        ctts = {i: bytearray() for i in range(len(tracks))}
        chunks = {i: bytearray() for i in range(len(tracks))}
        stsc = {i: bytearray() for i in range(len(tracks))}
        with open(self.path, "ab") as body:
            for (_slot, index), members in sorted(slices.items()):
                track = tracks[index]
                chunks[index] += _CHUNK.pack(state.body, len(members))
                track.chunks += 1
                if len(members) != track.stsc_last:
                    stsc[index] += struct.pack(">III", track.chunks, len(members), 1)
                    track.stsc_entries += 1
                    track.stsc_last = len(members)
                for k in members:
                    packet, (pts, dts) = ordered[k], ticks[k]
                    data = mp4.annexb_to_lengths(packet.data) if track.annexb else packet.data
                    body.write(data)
                    state.body += len(data)
                    numbered.append(_numbered(packet, track.samples))
                    track.samples += 1
                    track.bytes += len(data)
                    sizes[index].append(len(data))
                    if packet.key:
                        track.keys += 1
                        keys[index].append(track.samples)
                    if track.last_dts is not None:
                        if dts <= track.last_dts:
                            raise Unsupported("decode times that do not increase")
                        stts[index] += _run(track, "stts", dts - track.last_dts)
                    track.last_dts = dts
                    offset = pts - dts
                    track.cts_nonzero |= offset != 0
                    track.cts_negative |= offset < 0
                    ctts[index] += _run(track, "ctts", offset)
            body.flush()
            os.fdatasync(body.fileno())  # written back now, while recording: the insert at stop waits for none
        for index in range(len(tracks)):
            for kind, data in (("stsz", mp4.be_u32(sizes[index])), ("stss", mp4.be_u32(keys[index])),
                               ("stts", bytes(stts[index])), ("ctts", bytes(ctts[index])),
                               ("chunks", bytes(chunks[index])), ("stsc", bytes(stsc[index]))):
                with open(self.table(index, kind), "ab") as handle:
                    handle.write(data)
        self._hash_parts(progress.body, state.body)
        _drop_cached(self.path, self.part_size, state.body // self.part_size * self.part_size)
        kept = _edges(_read_raw(self.tail(state.appended)) + numbered, first=False)
        state.appended += 1
        _write_raw(self.tail(state.appended), kept)
        self.tail(state.appended - 2).unlink(missing_ok=True)
        return state

    def _hash_parts(self, before: int, after: int) -> None:
        """Hash the body parts an append completed, from the second (the first goes out with the header)."""
        with open(self.path, "rb") as body:
            hash_new_parts(self.parts, body, before, after, self.part_size, first=1)

    def _checksum(self, progress: Mp4Progress, header: bytes, shift: int) -> PartChecksum:
        """The closed file's part checksums, its first part `len(header)` bytes longer: the first (the header and
        the body's first part) and the tail hashed now, the parts between as hashed while recording. `shift`: where
        the body begins in the file (0 before the header is inserted; that is when stop hashes, the two parts it
        reads still in the page cache)."""
        ahead = stored_digests(self.parts, progress.body, self.part_size)
        total = len(header) + progress.body
        digests = []
        with open(self.path, "rb") as handle:
            for number in range(1, count_parts(total, self.part_size, len(header)) + 1):
                offset, length = part_span(number, total, self.part_size, len(header))
                if number == 1:
                    digests.append(hash_range(handle, shift, length - len(header), prefix=header))
                elif number <= len(ahead):
                    digests.append(ahead[number - 1])
                else:
                    digests.append(hash_range(handle, offset - len(header) + shift, length))
        return PartChecksum(self.part_size, digests, len(header))

    @staticmethod
    def _ticks(track: TrackTable, packet: RawPacket) -> tuple[int, int]:
        return (_to_ticks(packet.pts, packet.time_base, track.timescale),
                _to_ticks(packet.dts, packet.time_base, track.timescale))

    # -- at stop ---------------------------------------------------------------------------------------------

    def close(self, progress: Mp4Progress, settings: Mp4Settings, keyint: int, extradata: list[str],
              copies: Path | None = None) -> ClosedMp4:
        """Put the moov in front of the body: the file at `path` is then the finished MP4. `copies`: see _mux.

        The header is laid out once: every table is read and built once, and only the chunk offsets wait for the
        header's length (their boxes' sizes do not depend on it). Duration and streams are read from the edge
        packets' own MP4, whose movie and track headers are the finished file's, so the file is not opened again."""
        if not progress.appended or not all(t.samples for t in progress.tracks):
            raise Unsupported("a track of the live MP4 holds no sample")
        edges = _read_raw(self.head) + _read_raw(self.tail(progress.appended))
        unique = {(p.track, p.number): p for p in edges}
        muxed, _annexb = _mux(progress.sources, settings, keyint, extradata,
                              sorted(unique.values(), key=_decode_order), copies)
        pieces = self._moov(progress, muxed)
        mdat_head = mp4.mdat_header(progress.body)
        head = sum(len(piece) for piece in pieces)
        padded = -(-(head + 8 + len(mdat_head)) // BLOCK) * BLOCK
        header = b"".join([*(p.render(padded) if isinstance(p, _ChunkOffsets) else p for p in pieces),
                           mp4.free(padded - head - len(mdat_head)), mdat_head])
        if len(header) != padded:
            raise Unsupported("the MP4 header is not the length it was laid out for")
        size = self.path.stat().st_size
        if size not in (progress.body, progress.body + padded):
            raise Unsupported(f"the live MP4 body is {size} bytes, the state says {progress.body}")
        checksum = self._checksum(progress, header, size - progress.body)
        if size == progress.body:
            _insert_front(self.path, padded)
        with open(self.path, "r+b") as out:
            out.write(header)
            out.flush()
            os.fsync(out.fileno())
        with av.open(io.BytesIO(muxed)) as probe:  # what a player finds, as to_mp4 reports it
            duration = (probe.duration or 0) / av.time_base
            streams = [(s.type, s.codec_context.name) for s in probe.streams]
        return ClosedMp4(self.path, padded + progress.body, duration, padded, streams, checksum)

    def _moov(self, progress: Mp4Progress, muxed: bytes) -> list[bytes | _ChunkOffsets]:
        """ftyp and moov as pieces to join: the muxer's boxes, with each track's sample tables the whole
        recording's."""
        top = mp4.boxes(muxed)
        ftyp = next(b for b in top if b.name == b"ftyp")
        moov = next(b for b in top if b.name == b"moov")
        tracks = iter(range(len(progress.tracks)))

        def rebuilt(parent: mp4.Box) -> list[bytes | _ChunkOffsets]:
            pieces: list[bytes | _ChunkOffsets] = []
            for box in mp4.boxes(muxed, parent.body, parent.end):
                if box.name == b"stbl":
                    index = next(tracks, None)
                    if index is None:
                        raise Unsupported("the MP4 muxer wrote more tracks than the live MP4 has")
                    pieces += _nest(b"stbl", self._stbl(progress, muxed, box, index))
                elif box.name in (b"trak", b"mdia", b"minf"):
                    pieces += _nest(box.name, rebuilt(box))
                else:
                    pieces.append(muxed[box.start:box.end])
            return pieces

        return [muxed[ftyp.start:ftyp.end], *_nest(b"moov", rebuilt(moov))]

    def _stbl(self, progress: Mp4Progress, muxed: bytes, stbl: mp4.Box, index: int) -> list[bytes | _ChunkOffsets]:
        track = progress.tracks[index]
        found = {b.name: b for b in mp4.boxes(muxed, stbl.body, stbl.end)}
        unknown = set(found) - {b"stsd", b"stts", b"stss", b"ctts", b"stsc", b"stsz", b"stco", b"co64", b"sgpd",
                                b"sbgp"}
        if unknown:
            raise Unsupported(f"the MP4 muxer wrote sample table boxes the live output does not build: {unknown}")
        last = _last_delta(muxed, found[b"stts"])  # the last sample's duration, as the muxer gives it
        # the muxer's track_duration (the decode span), which its bit rates are computed over; mdhd's duration is
        # the presentation's span, in the muxer's own mdhd, kept as it is
        span = (track.last_dts or 0) + last - self._first_dts(index, track)
        stts_count, stts_tail = _closed_runs(track.stts_open, last)
        parts: list[bytes | _ChunkOffsets] = [self._stsd(muxed, found[b"stsd"], track, span)]
        parts += _full_box(b"stts", 0, struct.pack(">I", track.stts_runs + stts_count),
                           self._read_table(index, "stts", 8 * track.stts_runs), stts_tail)
        if track.keys < track.samples:
            parts += _full_box(b"stss", 0, struct.pack(">I", track.keys), self._read_table(index, "stss", 4 * track.keys))
        if track.cts_nonzero:
            ctts_count, ctts_tail = _closed_runs(track.ctts_open, None)
            parts += _full_box(b"ctts", 1 if track.cts_negative else 0,
                               struct.pack(">I", track.ctts_runs + ctts_count),
                               self._read_table(index, "ctts", 8 * track.ctts_runs), ctts_tail)
        chunks = self._read_table(index, "chunks", _CHUNK.size * track.chunks)
        self._ensure_stsc(index, track)
        parts += _full_box(b"stsc", 0, struct.pack(">I", track.stsc_entries),
                           self._read_table(index, "stsc", 12 * track.stsc_entries))
        parts += _full_box(b"stsz", 0, struct.pack(">II", 0, track.samples),
                           self._read_table(index, "stsz", 4 * track.samples))
        parts.append(_ChunkOffsets([offset for (offset,) in _CHUNK_OFFSET.iter_unpack(chunks)],
                                   wide=progress.body + WIDE_MARGIN > 0xFFFFFFFF))
        if b"sgpd" in found:
            parts.append(muxed[found[b"sgpd"].start:found[b"sgpd"].end])
        if b"sbgp" in found:
            parts.append(_sbgp_all(muxed, found[b"sbgp"], track.samples))
        return parts

    def _ensure_stsc(self, index: int, track: TrackTable) -> None:
        """A state saved before stsc was kept while recording: its stsc file written from the chunk table, once."""
        if track.stsc_entries is not None:
            return
        counts = [count for (count,) in _CHUNK_COUNT.iter_unpack(
            self._read_table(index, "chunks", _CHUNK.size * track.chunks))]
        firsts = [k for k in range(len(counts)) if k == 0 or counts[k] != counts[k - 1]]
        self.table(index, "stsc").write_bytes(b"".join(struct.pack(">III", k + 1, counts[k], 1) for k in firsts))
        track.stsc_entries, track.stsc_last = len(firsts), counts[-1] if counts else 0

    def _read_table(self, index: int, kind: str, length: int) -> bytes:
        """The first `length` bytes of a table file: what the state records (a crashed append may have left more)."""
        with open(self.table(index, kind), "rb") as handle:
            data = handle.read(length)
        if len(data) != length:
            raise Unsupported(f"{self.table(index, kind).name} is shorter than the state records")
        return data

    def _first_dts(self, index: int, track: TrackTable) -> int:
        first = next((p for p in _read_raw(self.head) if p.track == index and p.number == 0), None)
        if first is None:
            raise Unsupported("the live MP4 lost a track's first packet")
        return _to_ticks(first.dts, first.time_base, track.timescale)

    def _stsd(self, muxed: bytes, stsd: mp4.Box, track: TrackTable, duration: int) -> bytes:
        """The sample description, with the bit rates FFmpeg computes from every sample (total bytes over the
        duration) set from the whole track rather than from the edge packets the muxer saw."""
        data = bytearray(muxed[stsd.start:stsd.end])
        average = track.bytes * 8 * track.timescale // duration if duration else 0
        sparse = _sparse_average(muxed, stsd, duration)
        for field_at in _bit_rate_fields(data):
            buffer, maximum, mean = struct.unpack_from(">III", data, field_at)
            if mean == sparse:
                mean = average
            if maximum == sparse:
                maximum = average
            elif maximum < average:
                maximum = average
            struct.pack_into(">III", data, field_at, buffer, maximum, mean)
        return bytes(data)

    def remove(self) -> None:
        for path in self.directory.glob(f"{self.participant_id}.live.mp4*"):
            path.unlink(missing_ok=True)


# -- helpers --------------------------------------------------------------------------------------------------

def _decode_order(packet: RawPacket) -> tuple:
    return (Fraction(packet.dts if packet.dts is not None else packet.pts) * packet.time_base, packet.track)


def _numbered(packet: RawPacket, number: int) -> RawPacket:
    return RawPacket(packet.track, packet.pts, packet.dts, packet.duration, packet.time_base, packet.key,
                     packet.data, number)


def _edges(packets: list[RawPacket], first: bool) -> list[RawPacket]:
    by_track: dict[int, list[RawPacket]] = {}
    for packet in packets:
        by_track.setdefault(packet.track, []).append(packet)
    kept = []
    for track_packets in by_track.values():
        track_packets.sort(key=lambda p: (p.number, _decode_order(p)) if not first else _decode_order(p))
        kept.extend(track_packets[:EDGE_SAMPLES] if first else track_packets[-EDGE_SAMPLES:])
    return kept


def _to_ticks(value: int, time_base: Fraction, timescale: int) -> int:
    exact = Fraction(value) * time_base * timescale
    if exact.denominator != 1:
        raise Unsupported(f"a timestamp of {value} x {time_base} falls between the MP4 track's ticks")
    return int(exact)


def _run(track: TrackTable, kind: str, value: int) -> bytes:
    """Count `value` in the track's open stts/ctts run; the bytes of a run it closed (to append), else b""."""
    open_run = track.stts_open if kind == "stts" else track.ctts_open
    if open_run[0] and open_run[1] == value:
        open_run[0] += 1
        return b""
    closed = b""
    if open_run[0]:
        closed = struct.pack(">II" if kind == "stts" else ">Ii", open_run[0], open_run[1])
        if kind == "stts":
            track.stts_runs += 1
        else:
            track.ctts_runs += 1
    open_run[0], open_run[1] = 1, value
    return closed


def _closed_runs(open_run: list, last: int | None) -> tuple[int, bytes]:
    """The open run (and, for stts, the last sample's own delta) as entries: (count, bytes)."""
    count, value = open_run
    entries: list[tuple[int, int]] = []
    if last is None:
        if count:
            entries.append((count, value))
    else:
        if count and value == last:
            entries.append((count + 1, value))
        else:
            if count:
                entries.append((count, value))
            entries.append((1, last))
    fmt = ">II" if last is not None else ">Ii"
    return len(entries), b"".join(struct.pack(fmt, c, v) for c, v in entries)


def _cut(path: Path, length: int) -> None:
    if not path.exists():
        if length:
            raise Unsupported(f"{path.name} is missing")
        path.touch()
        return
    if path.stat().st_size < length:
        raise Unsupported(f"{path.name} is shorter than the state records")
    with open(path, "r+b") as handle:
        handle.truncate(length)


def _write_raw(path: Path, packets: list[RawPacket]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        for p in packets:
            out.write(_RAW.pack(p.track, p.number, p.pts, p.dts, p.duration, p.time_base.numerator,
                                p.time_base.denominator, int(p.key), len(p.data)))
            out.write(p.data)
    os.replace(tmp, path)


def _read_raw(path: Path) -> list[RawPacket]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    packets, offset = [], 0
    while offset < len(data):
        track, number, pts, dts, duration, num, den, key, size = _RAW.unpack_from(data, offset)
        offset += _RAW.size
        packets.append(RawPacket(track, pts, dts, duration, Fraction(num, den), bool(key),
                                 data[offset:offset + size], number))
        offset += size
    return packets


def source_params(stream) -> dict:
    """What plan_track reads from a source stream, to open the same encoders at stop."""
    context = stream.codec_context
    return {"type": stream.type, "codec": context.name, "width": getattr(context, "width", 0),
            "height": getattr(context, "height", 0),
            "timeBase": [stream.time_base.numerator, stream.time_base.denominator] if stream.time_base else None,
            "layout": context.layout.name if getattr(context, "layout", None) else None}


def _as_stream(params: dict) -> SimpleNamespace:
    layout = SimpleNamespace(name=params["layout"]) if params["layout"] else None
    context = SimpleNamespace(name=params["codec"], width=params["width"], height=params["height"], layout=layout)
    time_base = Fraction(*params["timeBase"]) if params["timeBase"] else None
    return SimpleNamespace(type=params["type"], codec_context=context, time_base=time_base, average_rate=None)


def _mux(sources: list[dict], settings: Mp4Settings, keyint: int, extradata: list[str],
         packets: list[RawPacket], copies: Path | None) -> tuple[bytes, list[bool]]:
    """`packets` muxed by FFmpeg's MP4 muxer into memory, through streams opened as to_mp4 opens them: encoders for
    the tracks it transcodes, and for those it copies (MP4_COPY_CODECS) the copied stream of `copies`, a Matroska
    file of the window's output tracks, from which to_mp4 would copy them too. Also says, per track, whether its
    samples come as Annex B (an encoder's H.264), which the muxer rewrites to length-prefixed NAL units."""
    sink = io.BytesIO()
    try:
        with av.open(str(copies)) if copies is not None else nullcontext() as template, \
                av.open(sink, "w", format="mp4") as out:
            given = [st for st in template.streams if st.type in ("audio", "video")] if template is not None else []
            tracks = []
            for index, source in enumerate(sources):
                stream = _as_stream(source)
                if stream.codec_context.name in MP4_COPY_CODECS[stream.type]:
                    if index >= len(given) or given[index].type != stream.type:
                        raise Unsupported("no stream to copy the live MP4's copied track from")
                    stream = given[index]
                tracks.append(plan_track(out, stream, settings, keyint=keyint))
            out.start_encoding()
            given_extradata = [bytes(t.out.codec_context.extradata or b"") for t in tracks]
            annexb = [t.out.type == "video" and mp4.is_annexb(data) for t, data in zip(tracks, given_extradata)]
            digests = [hashlib.sha256(data).hexdigest() for data in given_extradata]
            if digests != extradata:
                raise Unsupported("the MP4 muxer's encoders have other codec parameters than the windows'")
            for p in packets:
                packet = av.Packet(p.data)
                packet.pts, packet.dts, packet.duration, packet.time_base = p.pts, p.dts, p.duration, p.time_base
                packet.is_keyframe = p.key
                packet.stream = tracks[p.track].out
                out.mux(packet)
    except av.FFmpegError as exc:
        raise Unsupported(f"the MP4 muxer refused the live packets: {exc}") from None
    return sink.getvalue(), annexb


@dataclass(frozen=True)
class _ChunkOffsets:
    """A track's stco (co64 when `wide`) box, whose entries are offsets in the body until the header's length,
    which they are shifted by, is known. Its size does not depend on that length."""

    offsets: list[int]
    wide: bool

    def __len__(self) -> int:
        return 16 + (8 if self.wide else 4) * len(self.offsets)

    def render(self, base: int) -> bytes:
        shifted = [base + offset for offset in self.offsets]
        if self.wide:
            return mp4.full_box(b"co64", 0, 0, struct.pack(f">I{len(shifted)}Q", len(shifted), *shifted))
        return mp4.full_box(b"stco", 0, 0, struct.pack(">I", len(shifted)) + mp4.be_u32(array("I", shifted)))


def _full_box(name: bytes, version: int, *payload: bytes) -> list[bytes]:
    """A full box as pieces: its tables are not copied into it (the header is joined once, at the end)."""
    return [mp4.full_box_header(name, version, 0, sum(len(piece) for piece in payload)), *payload]


def _nest(name: bytes, pieces: list[bytes | _ChunkOffsets]) -> list[bytes | _ChunkOffsets]:
    """A box around `pieces`, as pieces: the payload is joined once, with the whole header."""
    return [mp4.box_header(name, sum(len(piece) for piece in pieces)), *pieces]


def _traks(data: bytes) -> list[mp4.Box]:
    moov = next(b for b in mp4.boxes(data) if b.name == b"moov")
    return [b for b in mp4.boxes(data, moov.body, moov.end) if b.name == b"trak"]


def _path(data: bytes, parent: mp4.Box, *names: bytes) -> mp4.Box:
    box = parent
    for name in names:
        found = mp4.child(data, box, name)
        if found is None:
            raise Unsupported(f"the MP4 muxer wrote no {name!r} box")
        box = found
    return box


def _mdhd_fields(data: bytes, trak: mp4.Box) -> tuple[int, int, int]:
    """(version, offset of timescale, offset of duration) of the track's mdhd."""
    mdhd = _path(data, trak, b"mdia", b"mdhd")
    version = data[mdhd.body]
    at = mdhd.body + 4 + (16 if version == 1 else 8)
    return version, at, at + 4


def _last_delta(data: bytes, stts: mp4.Box) -> int:
    count = struct.unpack_from(">I", data, stts.body + 4)[0]
    if not count:
        raise Unsupported("the MP4 muxer wrote an empty stts")
    return struct.unpack_from(">I", data, stts.body + 8 + 8 * (count - 1) + 4)[0]


def _sbgp_all(data: bytes, sbgp: mp4.Box, samples: int) -> bytes:
    """The sample-to-group box with its one entry covering every sample (the AAC roll group FFmpeg writes)."""
    version = data[sbgp.body]
    head = 4 + 4 + (4 if version == 1 else 0)
    count = struct.unpack_from(">I", data, sbgp.body + head)[0]
    if count != 1:
        raise Unsupported("a sample group the live MP4 does not extend")
    body = bytearray(data[sbgp.start:sbgp.end])
    struct.pack_into(">I", body, sbgp.header + head + 4, samples)
    return bytes(body)


def _bit_rate_fields(entry: bytearray) -> list[int]:
    """Offsets of (buffer size, max bit rate, average bit rate) triples in a sample description: each btrt box
    (three 32-bit fields) and each esds DecoderConfigDescriptor (a 24-bit buffer size before them; returned as the
    offset one byte before it so the triple reads as 32-bit fields, the extra byte being the stream type)."""
    found = []
    start = 0
    while True:
        at = entry.find(b"btrt", start)
        if at < 0:
            break
        found.append(at + 4)
        start = at + 4
    at = entry.find(b"esds")
    if at >= 0:
        k = at + 8  # past the name and version/flags
        if entry[k] == 0x03:
            k += 1
            while entry[k] & 0x80:
                k += 1
            k += 1 + 3  # the length's last byte, ES_ID, flags
            if entry[k] == 0x04:
                k += 1
                while entry[k] & 0x80:
                    k += 1
                k += 1 + 1  # the length's last byte, objectTypeIndication
                found.append(k)  # stream type byte + 24-bit buffer size, then max, average
    return found


def _sparse_average(data: bytes, stsd: mp4.Box, duration: int) -> int:
    """The average bit rate the muxer computed from the edge packets it saw (to recognise it in the fields)."""
    moov = next(b for b in mp4.boxes(data) if b.name == b"moov")
    for trak in [b for b in mp4.boxes(data, moov.body, moov.end) if b.name == b"trak"]:
        stbl = _path(data, trak, b"mdia", b"minf", b"stbl")
        if stbl.start <= stsd.start < stbl.end:
            stsz = _path(data, trak, b"mdia", b"minf", b"stbl", b"stsz")
            size, count = struct.unpack_from(">II", data, stsz.body + 4)
            total = size * count if size else sum(struct.unpack_from(f">{count}I", data, stsz.body + 12))
            timescale = struct.unpack_from(">I", data, _mdhd_fields(data, trak)[1])[0]
            return total * 8 * timescale // duration if duration else 0
    raise Unsupported("the sample description is in no track")


def _drop_cached(path: Path, start: int, end: int) -> None:
    """Drop the body's pages in [start, end) (clean, already synced) from the page cache. Inserting blocks at the
    front at stop truncates the file's page cache from the insertion on, which costs time linear in what is cached
    (0.14 s for 1.4 GB cached here, nothing when none is); the body is not read again while recording but for the
    parts hashed or sent ahead, once each. The first part and the part still growing stay cached: stop hashes
    them (and reads them before the insertion), and they are at most two parts whatever the length."""
    if end <= start:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_fallocate = None


def _insert_front(path: Path, length: int) -> None:
    """`length` zero bytes in front of the file's content: inserted blocks where the filesystem can
    (FALLOC_FL_INSERT_RANGE moves no data), else one copy behind them."""
    global _fallocate
    if _fallocate is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _fallocate = libc.fallocate
        _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        _fallocate.restype = ctypes.c_int
    fd = os.open(path, os.O_RDWR)
    try:
        if _fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, length) == 0:
            os.fsync(fd)
            return
        code = ctypes.get_errno()
    finally:
        os.close(fd)
    if code not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENOTTY):
        raise OSError(code, os.strerror(code), str(path))
    log.info("%s: the filesystem cannot insert blocks (%s); the MP4 body is copied behind its header", path,
             errno.errorcode.get(code, code))
    tmp = path.with_name(path.name + ".copy")
    with open(path, "rb") as body, open(tmp, "wb") as out:
        out.truncate(length)
        out.seek(length)
        shutil.copyfileobj(body, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
