"""Encoder settings for the MP4 transcode path, apart from convert.py so settings can name them without PyAV."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mp4Settings:
    """Encoder settings for the transcode path (MP4_* variables)."""

    video_codec: str = "libx264"
    video_preset: str = "veryfast"
    video_crf: int = 23
    audio_codec: str = "aac"
    audio_bit_rate: int = 128_000
