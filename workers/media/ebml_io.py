"""The little EBML (Matroska's binary XML) tapedeck reads and writes itself: the live path joins window files
by their Clusters and writes the header, Cues and SeekHead a whole-file muxer would, without re-reading media.

Only what that needs: variable-length ids and sizes, element headers, walking a file's top-level elements,
and encoding unsigned ints, floats, binary and master elements. Not a general Matroska library.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

EBML = 0x1A45DFA3
SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
SEEK = 0x4DBB
SEEK_ID = 0x53AB
SEEK_POSITION = 0x53AC
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
DURATION = 0x4489
TRACKS = 0x1654AE6B
CLUSTER = 0x1F43B675
CLUSTER_TIMESTAMP = 0xE7
CUES = 0x1C53BB6B
CUE_POINT = 0xBB
CUE_TIME = 0xB3
CUE_TRACK_POSITIONS = 0xB7
CUE_CLUSTER_POSITION = 0xF1
CUE_TRACK = 0xF7
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
VOID = 0xEC
CRC32 = 0xBF
TAGS = 0x1254C367

LEVEL1 = frozenset({SEEK_HEAD, INFO, TRACKS, CLUSTER, CUES, TAGS, 0x1941A469, 0x1043A770})
"""Top-level children of a Segment (with Attachments, Chapters): one of these ids ends an unknown-size Cluster."""

UNKNOWN_SIZE = -1
"""An element whose size field is all ones: it runs until an element of its own level or above begins."""

SIZE_WIDTH = 8
"""Width of every size this module writes for elements rewritten later (Segment, Void): fixed, so they can be
patched in place."""


class EbmlError(ValueError):
    """Raised when bytes are not the EBML this module expects (a truncated or foreign file)."""


@dataclass(frozen=True)
class Element:
    id: int
    start: int
    """Offset of the element's id."""
    data_start: int
    size: int
    """Payload bytes, or UNKNOWN_SIZE."""

    @property
    def end(self) -> int:
        if self.size == UNKNOWN_SIZE:
            raise EbmlError(f"element {self.id:#x} has an unknown size")
        return self.data_start + self.size


def read_header(handle: BinaryIO, offset: int) -> Element | None:
    """The element header at `offset`; None at the end of the data (or a header cut short by it)."""
    handle.seek(offset)
    head = handle.read(12)
    if not head:
        return None
    try:
        ident, id_len = _vint(head, 0, keep_marker=True)
        size, size_len = _vint(head, id_len, keep_marker=False)
    except EbmlError:
        if len(head) < 12:
            return None
        raise
    if id_len > 4:
        raise EbmlError(f"invalid element id at offset {offset}")
    all_ones = (1 << (7 * size_len)) - 1
    return Element(ident, offset, offset + id_len + size_len, UNKNOWN_SIZE if size == all_ones else size)


def children(handle: BinaryIO, start: int, end: int) -> Iterator[Element]:
    """Elements of known size between two offsets (a master element's payload)."""
    offset = start
    while offset < end:
        element = read_header(handle, offset)
        if element is None or element.size == UNKNOWN_SIZE:
            raise EbmlError(f"unexpected element at offset {offset}")
        yield element
        offset = element.end


def read_uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


def read_float(data: bytes) -> float:
    if len(data) == 4:
        return struct.unpack(">f", data)[0]
    if len(data) == 8:
        return struct.unpack(">d", data)[0]
    return 0.0


def encode_id(ident: int) -> bytes:
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big")


def encode_size(size: int, width: int | None = None) -> bytes:
    """Shortest vint for `size`, or exactly `width` bytes."""
    if width is None:
        width = 1
        while size >= (1 << (7 * width)) - 1:
            width += 1
    if size >= (1 << (7 * width)) - 1:
        raise EbmlError(f"size {size} does not fit {width} bytes")
    return (size | (1 << (7 * width))).to_bytes(width, "big")


def element(ident: int, payload: bytes, size_width: int | None = None) -> bytes:
    return encode_id(ident) + encode_size(len(payload), size_width) + payload


def uint_element(ident: int, value: int) -> bytes:
    return element(ident, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def float_element(ident: int, value: float) -> bytes:
    return element(ident, struct.pack(">d", value))


def void(total: int) -> bytes:
    """A Void element exactly `total` bytes long (at least 9: id plus an 8-byte size)."""
    if total < 1 + SIZE_WIDTH:
        raise EbmlError(f"no Void element is {total} bytes long")
    return element(VOID, bytes(total - 1 - SIZE_WIDTH), SIZE_WIDTH)


def ebml_header(doc_type: str) -> bytes:
    """The EBML header libavformat writes for Matroska and WebM (DocTypeVersion 4, ReadVersion 2)."""
    body = b"".join([
        uint_element(0x4286, 1), uint_element(0x42F7, 1), uint_element(0x42F2, 4), uint_element(0x42F3, 8),
        element(0x4282, doc_type.encode()), uint_element(0x4287, 4), uint_element(0x4285, 2),
    ])
    return element(EBML, body)


def _vint(data: bytes, offset: int, keep_marker: bool) -> tuple[int, int]:
    if offset >= len(data):
        raise EbmlError("truncated variable-length integer")
    first = data[offset]
    if first == 0:
        raise EbmlError("invalid variable-length integer")
    length = 9 - first.bit_length()
    if offset + length > len(data):
        raise EbmlError("truncated variable-length integer")
    value = int.from_bytes(data[offset:offset + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length
