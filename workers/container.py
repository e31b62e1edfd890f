"""Recognize a stream's container from the bytes of its header chunk, never from what the client claims."""
from __future__ import annotations

from enum import Enum

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
"""First four bytes of every WebM/Matroska file (the EBML header element id)."""

MP4_BOX_TYPES = (b"ftyp", b"styp", b"moov", b"moof")


class Container(str, Enum):
    MATROSKA = "matroska"  # WebM is a Matroska profile; one demuxer reads both
    MP4 = "mp4"
    UNKNOWN = "unknown"

    @property
    def demuxer(self) -> str:
        return {"matroska": "matroska", "mp4": "mp4"}.get(self.value, "")


SUPPORTED_CONTAINERS = frozenset({Container.MATROSKA})
"""Fragmented MP4 (Safari) is recognized but not yet muxed."""


def sniff(data: bytes) -> Container:
    if data.startswith(EBML_MAGIC):
        return Container.MATROSKA
    if len(data) >= 8 and data[4:8] in MP4_BOX_TYPES:
        return Container.MP4
    return Container.UNKNOWN


def starts_header(data: bytes) -> bool:
    """True when a chunk begins a new container (a restarted recorder's first chunk)."""
    return sniff(data) is not Container.UNKNOWN


def describe(container: Container, data: bytes) -> str:
    """A human description of what a rejected header chunk contained."""
    if container is Container.MP4:
        return "fragmented MP4 is not supported yet; record WebM (video/webm;codecs=vp8,opus)"
    head = data[:8].hex(" ")
    return f"sequence 0 is not a WebM/Matroska header (first bytes: {head or 'none'})"
