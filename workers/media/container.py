"""Recognize a stream's container from the bytes of its header chunk, never from what the client claims."""
from __future__ import annotations

from enum import Enum

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
"""First four bytes of every WebM/Matroska file (the EBML header element id)."""

MP4_INIT_BOX = b"ftyp"
"""The box an MP4 init segment starts with (Safari's MediaRecorder writes ftyp, then moov)."""

MP4_MEDIA_BOXES = (b"styp", b"moov", b"moof", b"mdat", b"sidx")
"""Boxes that show MP4 but not a readable start: an init segment without ftyp, or a fragment without its init."""

MAX_FTYP_BYTES = 4096
"""An ftyp box lists a handful of brands; a larger size means the bytes only look like one."""

SIGNATURES = (
    (b"\x1f\x43\xb6\x75", "a WebM cluster without the header that must come first"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"ID3", "MP3 audio (ID3 tag)"),
    (b"\xff\xfb", "MP3 audio"),
    (b"OggS", "an Ogg stream"),
    (b"fLaC", "FLAC audio"),
    (b"RIFF", "a RIFF file (WAV or AVI)"),
    (b"{", "JSON text"),
    (b"<", "HTML or XML text"),
)
"""Leading bytes of formats a client might send by mistake, to name what was found in a 415."""


class Container(str, Enum):
    MATROSKA = "matroska"  # WebM is a Matroska profile; one demuxer reads both
    MP4 = "mp4"  # an MP4 init segment (ftyp): fragmented MP4 as Safari's MediaRecorder writes it
    UNKNOWN = "unknown"

    @property
    def demuxer(self) -> str:
        """The FFmpeg input format that reads this container."""
        return {"matroska": "matroska", "mp4": "mp4"}.get(self.value, "")


SUPPORTED_CONTAINERS = frozenset({Container.MATROSKA, Container.MP4})
"""Containers whose header chunk is accepted; everything else is answered with 415."""


def sniff(data: bytes) -> Container:
    """The container a header chunk starts; MP4 only for an init segment, which alone makes fragments readable."""
    if data.startswith(EBML_MAGIC):
        return Container.MATROSKA
    if _box_type(data) == MP4_INIT_BOX and 8 <= int.from_bytes(data[:4], "big") <= MAX_FTYP_BYTES:
        return Container.MP4
    return Container.UNKNOWN


def starts_header(data: bytes) -> bool:
    """True when a chunk begins a new container (a restarted recorder's first chunk)."""
    return sniff(data) is not Container.UNKNOWN


def describe(container: Container, data: bytes) -> str:
    """A human description of what a rejected header chunk contained."""
    head = data[:8].hex(" ") or "none"
    if _box_type(data) in MP4_MEDIA_BOXES:
        kind = _box_type(data).decode()
        return (f"sequence 0 is MP4 but does not start with an init segment (found a '{kind}' box, expected 'ftyp'); "
                f"first bytes: {head}")
    found = next((f"looks like {name}, " for magic, name in SIGNATURES if data.startswith(magic)), "is ")
    return f"sequence 0 {found}not a WebM/Matroska or fragmented MP4 header (first bytes: {head})"


def _box_type(data: bytes) -> bytes:
    """The type field of the MP4 box that would start at byte 0."""
    return data[4:8] if len(data) >= 8 else b""
