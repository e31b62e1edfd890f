"""Where things are in a recording's bytes (Matroska elements, MP4 boxes): to cut a recording where a
recorder would, strip its header, or corrupt one exact field."""
from __future__ import annotations


def slice_fragments(data: bytes) -> list[bytes]:
    """Cut fragmented MP4 at its boxes, as Safari's recorder hands it out: the init segment with the first
    fragment, then one moof+mdat fragment per chunk."""
    bounds, pos = [], 0
    while pos + 8 <= len(data):
        if data[pos + 4:pos + 8] == b"moof":
            bounds.append(pos)
        pos += int.from_bytes(data[pos:pos + 4], "big")
    bounds = [0, *bounds[1:], len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


_ELEMENT_NAMES = {
    0x114D9B74: "SeekHead", 0x1549A966: "Info", 0x1654AE6B: "Tracks", 0x1F43B675: "Cluster",
    0x1C53BB6B: "Cues", 0x1254C367: "Tags", 0x1043A770: "Chapters", 0xEC: "Void",
}


def segment_children(data: bytes) -> tuple[bool, list[str]]:
    """Walk the Segment's top-level elements: (segment size known, element names until an unknown size)."""
    pos = _skip_element(data, 0)  # the EBML header
    _, pos = _vint(data, pos, keep_marker=True)  # Segment id
    size, pos = _vint(data, pos)
    names: list[str] = []
    while pos < len(data):
        element, pos = _vint(data, pos, keep_marker=True)
        length, pos = _vint(data, pos)
        names.append(_ELEMENT_NAMES.get(element, hex(element)))
        if length is None:
            break
        pos += length
    return size is not None, names


def block_timecodes(data: bytes) -> list[tuple[int, int]]:
    """(byte offset of the 16-bit relative timecode, track number) of every SimpleBlock, to corrupt one."""
    pos = _skip_element(data, 0)
    _, pos = _vint(data, pos, keep_marker=True)
    _, pos = _vint(data, pos)
    found = []
    while pos < len(data):
        element, pos = _vint(data, pos, keep_marker=True)
        length, pos = _vint(data, pos)
        if length is None:
            break
        if element == 0x1F43B675:  # Cluster
            inner, end = pos, pos + length
            while inner < end:
                child, inner = _vint(data, inner, keep_marker=True)
                size, inner = _vint(data, inner)
                if child == 0xA3:  # SimpleBlock: track number, then the timecode
                    track, at = _vint(data, inner)
                    found.append((at, track or 0))
                inner += size or 0
        pos += length
    return found


def _skip_element(data: bytes, pos: int) -> int:
    _, pos = _vint(data, pos, keep_marker=True)
    length, pos = _vint(data, pos)
    return pos + (length or 0)


def _vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int | None, int]:
    """Decode an EBML variable-length integer; None for the all-ones 'unknown size'."""
    first = data[pos]
    width = 8 - first.bit_length() + 1
    value = first if keep_marker else first & ((1 << (8 - width)) - 1)
    for byte in data[pos + 1 : pos + width]:
        value = (value << 8) | byte
    unknown = not keep_marker and value == (1 << (7 * width)) - 1
    return (None if unknown else value), pos + width


def header_length(data: bytes) -> int:
    """Bytes before the first media (Cluster or moof): what a recorder writes once, at its start."""
    if data[4:8] == b"ftyp":
        pos = 0
        while data[pos + 4:pos + 8] != b"moof":
            pos += int.from_bytes(data[pos:pos + 4], "big")
        return pos
    pos = _skip_element(data, 0)
    _, pos = _vint(data, pos, keep_marker=True)
    _, pos = _vint(data, pos)
    while True:
        element, after_id = _vint(data, pos, keep_marker=True)
        if element == 0x1F43B675:  # Cluster
            return pos
        length, after_size = _vint(data, after_id)
        pos = after_size + (length or 0)
