"""MP4 output from a muxed recording: stream copy for MP4-friendly codecs, transcode (H.264/AAC) the rest.

Runs on the muxer's seekable output, so every input container and hole rule is handled once, by the muxer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av

from workers.media.encoding import Mp4Settings
from workers.media.errors import MediaError

MP4_COPY_CODECS = {"video": frozenset({"h264", "hevc"}), "audio": frozenset({"aac", "mp3"})}
"""Codecs copied into MP4 as they are: what plays everywhere (Safari included). Others are transcoded."""
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    bytes: int
    duration_seconds: float
    method: str
    """"copy" when every track was copied, "transcode" when every track was re-encoded, else "mixed"."""
    tracks: list[dict] = field(default_factory=list)


class _Track:
    """One output track: a copy of the input packets, or a decoder → encoder pair."""

    def __init__(self, out: av.stream.Stream, copy: bool) -> None:
        self.out, self.copy = out, copy

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        if self.copy:
            packet.stream = self.out
            return [packet]
        packets = []
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):
                frame = frame.reformat(format="yuv420p")
                frame.pict_type = av.video.frame.PictureType.NONE
            packets.extend(self.out.encode(frame))
        return packets

    def flush(self) -> list[av.Packet]:
        return [] if self.copy else list(self.out.encode(None))


def to_mp4(source: Path, output_dir: Path, basename: str, settings: Mp4Settings,
           progress: Callable[[float], None] | None = None) -> ConvertResult:
    """Write `<basename>.mp4` with the index at the front (faststart) for progressive playback."""
    target = output_dir / f"{basename}.mp4"
    tmp = output_dir / f"{basename}.mp4.part"
    try:
        with av.open(str(source)) as src, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            tracks = {s.index: plan_track(dst, s, settings) for s in src.streams if s.type in ("audio", "video")}
            total = (src.duration or 0) / av.time_base
            report = _progress_reporter(total, progress)
            for packet in src.demux(*[s for s in src.streams if s.index in tracks]):
                if packet.size == 0 and tracks[packet.stream.index].copy:
                    continue
                for out_packet in tracks[packet.stream.index].feed(packet):
                    dst.mux(out_packet)
                report(packet)
            for track in tracks.values():
                for out_packet in track.flush():
                    dst.mux(out_packet)
            copied = [t.copy for t in tracks.values()]
        os.replace(tmp, target)
    except av.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"MP4 conversion failed: {type(exc).__name__}") from None
    with av.open(str(target)) as check:  # report what a player will find, by decoder name ("h264", not "libx264")
        duration = (check.duration or 0) / av.time_base
        summary = [{"kind": s.type, "codec": s.codec_context.name, "method": "copy" if copy else "transcode"}
                   for s, copy in zip(check.streams, copied)]
    methods = {t["method"] for t in summary}
    return ConvertResult(path=target, bytes=target.stat().st_size, duration_seconds=duration,
                         method=methods.pop() if len(methods) == 1 else "mixed", tracks=summary)


def plan_track(dst: av.container.OutputContainer, stream: av.stream.Stream, settings: Mp4Settings,
               keyint: int | None = None) -> _Track:
    """The output track for one input track: a copy, or an encoder with the MP4 settings. The live path
    (workers/live/transcode.py) opens one per window with the same settings, and the first window's `keyint`."""
    name = stream.codec_context.name
    if name in MP4_COPY_CODECS[stream.type]:
        return _Track(dst.add_stream_from_template(stream), copy=True)
    if stream.type == "video":
        keyframes = keyint or round(2 * float(stream.average_rate or 30))  # a keyframe every ~2 s: quick seeks
        options = {"preset": settings.video_preset, "crf": str(settings.video_crf), "g": str(keyframes)}
        out = dst.add_stream(settings.video_codec, options=options)
        out.width, out.height = stream.codec_context.width, stream.codec_context.height
        out.pix_fmt = "yuv420p"
        out.time_base = stream.time_base or Fraction(1, 1000)
        out.codec_context.time_base = out.time_base
        return _Track(out, copy=False)
    out = dst.add_stream(settings.audio_codec, rate=AUDIO_RATE)
    out.bit_rate = settings.audio_bit_rate
    out.layout = stream.codec_context.layout.name if stream.codec_context.layout else "stereo"
    return _Track(out, copy=False)


def _progress_reporter(total: float, progress: Callable[[float], None] | None) -> Callable[[av.Packet], None]:
    last = [-1.0]

    def report(packet: av.Packet) -> None:
        if progress is None or total <= 0 or packet.pts is None or packet.time_base is None:
            return
        fraction = min(1.0, max(0.0, float(packet.pts * packet.time_base) / total))
        if fraction - last[0] >= 0.01:
            last[0] = fraction
            progress(fraction)

    return report
