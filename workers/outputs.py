"""From a participant's chunk streams to the files that get uploaded: mux, convert to MP4 if asked, poster."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workers.live.checksum import PartChecksum
from workers.media.convert import Mp4Settings, to_mp4
from workers.media.errors import MediaError
from workers.media.muxer import StreamInput, mux_participant
from workers.media.thumbnail import Thumbnail, make_thumbnail

log = logging.getLogger(__name__)

MUX_SHARE_WITH_TRANSCODE = 0.2
"""Of a participant's work, the share that stream copy takes when a transcode follows it."""


@dataclass(frozen=True)
class PreparedOutput:
    """A participant's finished media file and poster, ready for upload."""

    path: Path
    format: str
    bytes: int
    duration_seconds: float
    method: str
    """"copy", "transcode" or "mixed": how the output's tracks were produced (recorded in the manifest)."""
    tracks: list[dict]
    segments: int
    start_seconds: float
    """Container time of the first frame, which the output was moved back to 0 from (for alignment)."""
    timestamp_repairs: int
    dropped_packets: int
    thumbnail: Thumbnail | None
    paused_seconds_cut: float = 0.0
    """Media recorded inside pauses and cut out of this output."""
    dropped_chunks: dict[str, list[int]] = field(default_factory=dict)
    """Stream type → sequences that could not be demuxed and are not in the file."""
    checksum: PartChecksum | None = None
    """Live outputs: part checksums computed while recording, instead of a whole-file SHA-256 after stop."""

    @property
    def extension(self) -> str:
        return self.path.suffix.lstrip(".")


def prepare_output(inputs: list[StreamInput], output_dir: Path, participant_id: str, fmt: str, *,
                   mp4: Mp4Settings, thumbnail_offset: float, thumbnail_width: int,
                   progress: Callable[[float], None] | None = None) -> PreparedOutput:
    """Stream copy always; transcode only when MP4 output needs it. Raises MediaError for unreadable media."""
    report = progress or (lambda _f: None)
    mux_share = MUX_SHARE_WITH_TRANSCODE if fmt == "mp4" else 1.0
    muxed = mux_participant(inputs, output_dir, participant_id, lambda f: report(f * mux_share))
    path, size, duration = muxed.path, muxed.bytes, muxed.duration_seconds
    tracks, method = [t.to_json() | {"method": "copy"} for t in muxed.tracks], "copy"
    if fmt == "mp4":
        converted = to_mp4(muxed.path, output_dir, participant_id, mp4,
                           lambda f: report(mux_share + f * (1 - mux_share)))
        path, size, duration, method, tracks = (converted.path, converted.bytes, converted.duration_seconds,
                                                converted.method, converted.tracks)
        muxed.path.unlink(missing_ok=True)
    report(1.0)
    return PreparedOutput(path=path, format=path.suffix.lstrip("."), bytes=size, duration_seconds=duration,
                          method=method, tracks=tracks, segments=muxed.segments, start_seconds=muxed.start_seconds,
                          timestamp_repairs=muxed.timestamp_repairs, dropped_packets=muxed.dropped_packets,
                          paused_seconds_cut=muxed.paused_seconds_cut,
                          dropped_chunks=muxed.dropped_by_stream,
                          thumbnail=poster_or_none(path, output_dir / f"{participant_id}.jpg", thumbnail_offset,
                                                   thumbnail_width))


def poster_or_none(source: Path, target: Path, offset: float, width: int) -> Thumbnail | None:
    """A missing poster never fails a recording: log and go on without it."""
    if width <= 0:
        return None
    try:
        return make_thumbnail(source, target, offset, width)
    except MediaError as exc:
        log.warning("no thumbnail for %s: %s", source.name, exc.message)
        return None
