"""One JPEG poster per output: a frame from a configurable offset, scaled to a configurable width."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

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


def make_thumbnail(source: Path, target: Path, offset_seconds: float, width: int) -> Thumbnail | None:
    """The first video frame at or after the offset (or the middle, for shorter outputs); None without video."""
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            duration = (container.duration or 0) / av.time_base
            offset = offset_seconds if duration <= 0 or offset_seconds < duration else duration / 2
            frame = _frame_at(container, stream, offset)
    except av.FFmpegError as exc:
        raise MediaError(f"could not read a frame for the thumbnail: {type(exc).__name__}") from None
    if frame is None:
        return None
    scaled_width = _even(min(width, frame.width))
    scaled_height = _even(frame.height * scaled_width / frame.width)
    image = frame.reformat(width=scaled_width, height=scaled_height, format="yuvj420p")
    _write_jpeg(image, target)
    return Thumbnail(path=target, width=scaled_width, height=scaled_height, seconds=round(frame.time or 0.0, 3))


def _frame_at(container, stream, offset: float) -> av.VideoFrame | None:
    if offset > 0:
        container.seek(int(offset / stream.time_base), stream=stream, backward=True)
    first = None
    for frame in container.decode(stream):
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
