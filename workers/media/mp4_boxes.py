"""ISO BMFF (MP4) boxes, read and written by hand: only what the live MP4 output needs (workers/live/mp4_output.py) —
walking a moov FFmpeg wrote, and writing the sample tables and the few fields that grow with a recording."""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

CONTAINERS = frozenset({b"moov", b"trak", b"edts", b"mdia", b"minf", b"dinf", b"stbl"})
"""Boxes whose payload is only other boxes (and that the live output rebuilds from their children)."""


@dataclass(frozen=True)
class Box:
    name: bytes
    start: int
    header: int
    size: int

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes laid one after another in data[start:end]; ValueError when they do not tile it exactly."""
    end = len(data) if end is None else end
    found, offset = [], start
    while offset < end:
        if offset + 8 > end:
            raise ValueError("a truncated box header")
        size, name = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                raise ValueError("a truncated box header")
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ValueError(f"box {name!r} overruns its parent")
        found.append(Box(name, offset, header, size))
        offset += size
    return found


def child(data: bytes, parent: Box, name: bytes) -> Box | None:
    return next((b for b in boxes(data, parent.body, parent.end) if b.name == name), None)


def box_header(name: bytes, payload: int) -> bytes:
    """The header of a box holding `payload` bytes: 8 bytes, or 16 with a 64-bit size past 4 GiB."""
    if payload + 8 > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, name, payload + 16)
    return struct.pack(">I4s", payload + 8, name)


def box(name: bytes, payload: bytes) -> bytes:
    return box_header(name, len(payload)) + payload


def full_box_header(name: bytes, version: int, flags: int, payload: int) -> bytes:
    """The header of a full box holding `payload` bytes after its version and flags, those included."""
    return box_header(name, 4 + payload) + struct.pack(">I", (version << 24) | flags)


def full_box(name: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return full_box_header(name, version, flags, len(payload)) + payload


def free(size: int) -> bytes:
    """A `free` box of exactly `size` bytes (at least 8): padding players skip."""
    if size < 8:
        raise ValueError("a free box takes at least 8 bytes")
    return struct.pack(">I4s", size, b"free") + bytes(size - 8)


def mdat_header(payload: int) -> bytes:
    """The header of an mdat box holding `payload` bytes: 8 bytes, or 16 with a 64-bit size past 4 GiB."""
    return box_header(b"mdat", payload)


def be_u32(values: array) -> bytes:
    """An array('I') of 32-bit values as big-endian bytes (the tables' byte order)."""
    out = array("I", values)
    if out.itemsize != 4:
        raise ValueError("array('I') is not 32-bit here")
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        out.byteswap()
    return out.tobytes()


def annexb_to_lengths(data: bytes) -> bytes:
    """An H.264/HEVC access unit from Annex B (start codes, as x264 writes it) to 4-byte NAL lengths, as MP4 stores
    samples (what FFmpeg's MP4 muxer does to such packets: every NAL unit kept, trailing zeros dropped)."""
    out, starts, i, n = [], [], 0, len(data)
    while True:
        i = data.find(b"\x00\x00\x01", i)
        if i < 0:
            break
        starts.append(i + 3)
        i += 3
    for k, begin in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        while end > begin and data[end - 1] == 0:
            end -= 1  # the zero of a 4-byte start code, or trailing zeros
        if end > begin:
            out.append(struct.pack(">I", end - begin) + data[begin:end])
    return b"".join(out)


def is_annexb(extradata: bytes) -> bool:
    return extradata.startswith(b"\x00\x00\x01") or extradata.startswith(b"\x00\x00\x00\x01")
