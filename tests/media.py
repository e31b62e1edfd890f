"""Test media made with PyAV at test time (never committed): WebM written the way Chromium's
MediaRecorder writes it, fragmented MP4 the way Safari's does, sliced the way timeslice mode slices
them, and a decoder to check results."""
from __future__ import annotations

import array
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av

WEBM_HEADER = b"\x1a\x45\xdf\xa3" + b"\x00" * 28
"""An EBML magic and padding: enough for intake to take a chunk as a WebM header without real media."""

SAMPLE_RATE = 48_000
"""Opus only runs at 48 kHz, and so does Chromium's recorder."""

OPUS_FRAME = 960
"""20 ms of audio, the frame size Chromium's Opus encoder uses."""

TONE_HZ = 400
"""A tone whose period divides the Opus frame, so one precomputed frame repeats seamlessly."""


class NonSeekableSink(io.RawIOBase):
    """Collects muxer output without seek, so the muxer writes no Duration and no Cues (like a browser)."""

    def __init__(self, target: io.BufferedIOBase | None = None) -> None:
        super().__init__()
        self.target = target if target is not None else io.BytesIO()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.target.write(data)


@dataclass(frozen=True)
class Recording:
    """What to encode: small and fast by default."""

    seconds: float = 3.0
    width: int = 320
    height: int = 240
    fps: int = 30
    video: bool = True
    audio: bool = True
    keyframe_seconds: float = 1.0
    video_bit_rate: int = 400_000
    noise: float = 0.0
    """Share of each picture filled with random pixels, so benchmarks get a realistic bitrate."""
    video_codec: str = "libvpx"
    """"libx264" writes Matroska with H.264, as Chromium does for video/webm;codecs=h264."""
    audio_codec: str = "libopus"
    fmp4: bool = False
    """Fragmented MP4 (empty moov, a moof+mdat per keyframe interval) as Safari's MediaRecorder writes it."""
    pts_gap: tuple[float, float] | None = None
    """(at, seconds): packets from `at` on are stamped `seconds` later, as from a client that paused there."""


WEBM_CODECS = frozenset({"libvpx", "libvpx-vp9", "libsvtav1", "libopus"})

FMP4_FLAGS = "frag_keyframe+empty_moov+default_base_moof"
"""What Safari-style fragmented MP4 is written with: no moov index at the end, offsets relative to each moof."""


def encode_webm(spec: Recording = Recording(), sink: io.BufferedIOBase | None = None) -> bytes:
    """A live recording (no Duration, no Cues, or fragmented MP4), audio track first as Chromium writes it."""
    out = NonSeekableSink(sink)
    if spec.fmp4:
        fmt, options = "mp4", {"movflags": FMP4_FLAGS}
    else:
        legal = {spec.video_codec, spec.audio_codec} <= WEBM_CODECS
        fmt, options = ("webm" if legal else "matroska"), {"live": "1"}
    with av.open(out, mode="w", format=fmt, options=options) as container:
        audio = _add_audio(container, spec) if spec.audio else None
        video = _add_video(container, spec) if spec.video else None
        for stream, frame in _frames(spec, video, audio):
            _mux(container, stream.encode(frame), spec)
        for stream in (video, audio):
            if stream is not None:
                _mux(container, stream.encode(None), spec)
    return out.target.getvalue() if sink is None else b""  # type: ignore[union-attr]


def encode_fmp4(spec: Recording = Recording()) -> bytes:
    """Fragmented MP4 with H.264 and AAC, as Safari's MediaRecorder writes it."""
    return encode_webm(replace(spec, video_codec="libx264", audio_codec="aac", fmp4=True))


def _mux(container: av.container.OutputContainer, packets: list[av.Packet], spec: Recording) -> None:
    """Mux encoded packets, stamping those past `pts_gap` later (a pause that the encoders never saw)."""
    for packet in packets:
        if spec.pts_gap is not None and packet.pts is not None and packet.pts * packet.time_base >= spec.pts_gap[0]:
            ticks = round(spec.pts_gap[1] / packet.time_base)
            packet.pts += ticks
            packet.dts = packet.dts + ticks if packet.dts is not None else None
        container.mux(packet)


def _add_video(container: av.container.OutputContainer, spec: Recording) -> av.VideoStream:
    options = _FAST.get(spec.video_codec, {})
    stream = container.add_stream(spec.video_codec, rate=spec.fps, options=options)
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
    stream.bit_rate = spec.video_bit_rate
    stream.codec_context.gop_size = max(1, round(spec.fps * spec.keyframe_seconds))
    return stream


_FAST = {
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"preset": "12"},
    "libx264": {"preset": "ultrafast", "tune": "zerolatency"},
}
"""Encoder options that keep test media quick to make."""


def _add_audio(container: av.container.OutputContainer, spec: Recording) -> av.AudioStream:
    stream = container.add_stream(spec.audio_codec, rate=SAMPLE_RATE)
    stream.layout = "mono"
    return stream


def _frames(
    spec: Recording, video: av.VideoStream | None, audio: av.AudioStream | None
) -> Iterator[tuple[av.VideoStream | av.AudioStream, av.VideoFrame | av.AudioFrame]]:
    """Video and audio frames in presentation order, so the muxer interleaves them as a browser does."""
    video_count = round(spec.seconds * spec.fps) if video is not None else 0
    audio_count = round(spec.seconds * SAMPLE_RATE / OPUS_FRAME) if audio is not None else 0
    v = a = 0
    while v < video_count or a < audio_count:
        audio_due = a < audio_count and (v >= video_count or a * OPUS_FRAME / SAMPLE_RATE <= v / spec.fps)
        if audio_due:
            yield audio, audio_frame(a)  # type: ignore[misc]
            a += 1
        else:
            yield video, _video_frame(v, spec)  # type: ignore[misc]
            v += 1


def _video_frame(index: int, spec: Recording) -> av.VideoFrame:
    frame = av.VideoFrame(spec.width, spec.height, "yuv420p")
    luma = frame.planes[0]
    row = bytes((x * 2 + index * 8) & 255 for x in range(luma.line_size))
    noisy = round(spec.height * spec.noise)
    luma.update(os.urandom(luma.line_size * noisy) + row * (spec.height - noisy))
    frame.planes[1].update(bytes([128]) * frame.planes[1].buffer_size)
    frame.planes[2].update(bytes([(index * 3) & 255]) * frame.planes[2].buffer_size)
    frame.pts, frame.time_base = index, Fraction(1, spec.fps)
    return frame


_TONE = array.array(
    "h", (round(8000 * math.sin(2 * math.pi * TONE_HZ * k / SAMPLE_RATE)) for k in range(OPUS_FRAME))
).tobytes()


def audio_frame(index: int, tone: bytes = _TONE) -> av.AudioFrame:
    """The `index`-th 20 ms mono frame of a repeating tone (OPUS_FRAME s16 samples)."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=OPUS_FRAME)
    frame.planes[0].update(tone)
    frame.sample_rate = SAMPLE_RATE
    frame.pts, frame.time_base = index * OPUS_FRAME, Fraction(1, SAMPLE_RATE)
    return frame


def slice_timeslice(data: bytes, count: int) -> list[bytes]:
    """Cut a recording into `count` nearly equal pieces, as timeslice mode does: not at clusters."""
    if count < 1:
        raise ValueError("count must be at least 1")
    bounds = [round(len(data) * i / count) for i in range(count + 1)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def write_chunks(pieces: list[bytes], directory: Path, first_sequence: int = 0) -> list[tuple[int, Path]]:
    """Store pieces as chunk files and return the (sequence, path) list the muxer takes."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks = []
    for offset, piece in enumerate(pieces):
        sequence = first_sequence + offset
        path = directory / f"{sequence:08d}.chunk"
        path.write_bytes(piece)
        chunks.append((sequence, path))
    return chunks


@dataclass
class Probe:
    """What decoding a file found: per-kind frame counts, the media's time span, codecs."""

    frames: dict[str, int] = field(default_factory=dict)
    stream_frames: list[int] = field(default_factory=list)
    """Frames per audio/video track, in the file's track order."""
    video_times: list[float] = field(default_factory=list)
    """Presentation time of every decoded video frame, in decode order."""
    ends: dict[str, float] = field(default_factory=dict)
    """Per kind, where its last decoded frame ends: equal ends mean the tracks still line up."""
    decode_errors: int = 0
    codecs: list[tuple[str, str]] = field(default_factory=list)
    duration: float = 0.0
    """Seconds from the earliest to the latest decoded frame end, across all tracks."""
    container_duration: float | None = None
    """What the container header claims (None for a live recording)."""


def probe(path: Path) -> Probe:
    """Decode every frame of every audio and video track, to assert on what a player would see."""
    result = Probe()
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("audio", "video")]
        result.codecs = [(s.type, s.codec_context.codec.canonical_name) for s in streams]  # "av1", not "libdav1d"
        result.stream_frames = [0] * len(streams)
        if container.duration is not None:
            result.container_duration = container.duration / av.time_base
        position = {stream.index: i for i, stream in enumerate(streams)}
        spans: list[tuple[float, float]] = []
        for packet in container.demux(*streams):
            for frame in _decode(packet, result):
                result.stream_frames[position[packet.stream_index]] += 1
                kind = "audio" if isinstance(frame, av.AudioFrame) else "video"
                result.frames[kind] = result.frames.get(kind, 0) + 1
                if frame.time is not None:
                    length = frame.samples / frame.sample_rate if kind == "audio" else 0.0
                    spans.append((frame.time, frame.time + length))
                    result.ends[kind] = max(result.ends.get(kind, 0.0), frame.time + length)
                    if kind == "video":
                        result.video_times.append(frame.time)
        if spans:
            result.duration = max(end for _, end in spans) - min(start for start, _ in spans)
    return result


def _decode(packet: av.Packet, result: Probe) -> list[av.AudioFrame | av.VideoFrame]:
    """Decode like a player: a corrupt packet (after a hole) is skipped and counted, not fatal."""
    try:
        return packet.decode()  # type: ignore[return-value]
    except av.FFmpegError:
        result.decode_errors += 1
        return []


def seek_and_decode(path: Path, seconds: float) -> float | None:
    """Seek to `seconds` and return the time of the first video frame decoded there (None if none)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(round(seconds / stream.time_base), stream=stream)
        for frame in container.decode(stream):
            return frame.time
    return None
