"""One JPEG poster per output: a frame from a configurable offset, scaled to a configurable width."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from storage_providers.base import sha256_file
from workers.media.errors import MediaError


@dataclass(frozen=True)
class Thumbnail:
    path: Path
    width: int
    height: int
    seconds: float
    """Where in the output the frame was taken."""


def _even(value: float) -> int:
    """JPEG 4:2:0 wants even dimensions."""
    return max(2, int(round(value / 2)) * 2)


def make_thumbnail(source: Path | BinaryIO, target: Path, offset_seconds: float, width: int, *,
                   growing: bool = False) -> Thumbnail | None:
    """The first video frame at or after the offset (or the middle, for shorter outputs); None without video.

    `growing`: the source is an output still being written (a live output's snapshot, workers/live/step.py). Its
    frame counts only when the decoder gave it before the end of the packets: a decoder gives a frame before the
    flush only once no later packet can put one before it, so it is the frame the finished file gives. Else None,
    and the poster waits for more media."""
    try:
        with av.open(source if not isinstance(source, Path) else str(source)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            duration = (container.duration or 0) / av.time_base
            if growing and not 0 <= offset_seconds < duration:
                return None  # the finished file's duration decides the offset: known to pass it only then
            offset = offset_seconds if duration <= 0 or offset_seconds < duration else duration / 2
            frame = _frame_at(container, stream, offset, growing)
    except av.FFmpegError as exc:
        raise MediaError(f"could not read a frame for the thumbnail: {type(exc).__name__}") from None
    if frame is None:
        return None
    scaled_width = _even(min(width, frame.width))
    scaled_height = _even(frame.height * scaled_width / frame.width)
    try:
        image = frame.reformat(width=scaled_width, height=scaled_height, format="yuvj420p")
        _write_jpeg(image, target)
    except (av.FFmpegError, ValueError) as exc:  # scaling or the JPEG encoder: still the media's problem
        raise MediaError(f"could not write the thumbnail: {type(exc).__name__}") from None
    return Thumbnail(path=target, width=scaled_width, height=scaled_height, seconds=round(frame.time or 0.0, 3))


def checked_thumbnail(path: Path, width: int, height: int, seconds: float, digest: str) -> Thumbnail | None:
    """A poster written earlier, when its file is the one written (its SHA-256) and decodes to a picture of that
    width and height; else None."""
    try:
        if sha256_file(path) != digest:
            return None
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0), None)
    except (OSError, av.FFmpegError):
        return None
    if frame is None or (frame.width, frame.height) != (width, height):
        return None
    return Thumbnail(path=path, width=width, height=height, seconds=seconds)


def _frame_at(container, stream, offset: float, growing: bool = False) -> av.VideoFrame | None:
    if offset > 0:
        container.seek(int(offset / stream.time_base), stream=stream, backward=True)
    first = None
    for packet in container.demux(stream):
        if growing and not packet.size:
            return None  # what the decoder gives only when flushed at the end may differ in the finished file
        for frame in packet.decode():
            first = first or frame
            if frame.time is None or frame.time >= offset - 1e-3:
                return frame
    return first


def _write_jpeg(frame: av.VideoFrame, target: Path) -> None:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)  # a single still: any rate will do, the encoder just needs one
    frame.pts = None
    data = b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
