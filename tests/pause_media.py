"""Test media for pauses the server cuts: a client that keeps recording through a pause, its picture a
different colour before, during and after it, sliced by media time as MediaRecorder's timeslice does."""
from __future__ import annotations

import array
import io
import math
from dataclasses import dataclass
from fractions import Fraction

import av

from tests.media import OPUS_FRAME, SAMPLE_RATE, NonSeekableSink, audio_frame

FPS = 24
KEYFRAME_FRAMES = 6
"""A keyframe every 0.25 s by default; browsers send one every ~100 frames (tests of the bridge use that)."""

COLOURS = {"red": (81, 90, 240), "blue": (41, 240, 110), "green": (145, 54, 34)}
"""Y, U, V of each colour; V alone tells them apart after lossy coding."""


@dataclass(frozen=True)
class Phase:
    colour: str
    seconds: float


def encode_phases(phases: list[Phase], width: int = 160, height: int = 120,
                  keyframe_frames: int = KEYFRAME_FRAMES) -> bytes:
    """A live WebM (VP8 + Opus, no Duration, no Cues) whose picture takes each phase's colour in turn."""
    out = NonSeekableSink()
    with av.open(out, mode="w", format="webm", options={"live": "1"}) as container:
        audio = container.add_stream("libopus", rate=SAMPLE_RATE)
        audio.layout = "mono"
        video = container.add_stream("libvpx", rate=FPS, options={"deadline": "realtime", "cpu-used": "8"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = keyframe_frames
        total = sum(p.seconds for p in phases)
        frames, samples = round(total * FPS), round(total * SAMPLE_RATE / OPUS_FRAME)
        v = a = 0
        while v < frames or a < samples:
            if a < samples and (v >= frames or a * OPUS_FRAME / SAMPLE_RATE <= v / FPS):
                container.mux(audio.encode(audio_frame(a, _TONE)))
                a += 1
            else:
                container.mux(video.encode(_picture(v, colour_at(phases, v / FPS), width, height)))
                v += 1
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return out.target.getvalue()


def colour_at(phases: list[Phase], seconds: float) -> str:
    for phase in phases:
        if seconds < phase.seconds:
            return phase.colour
        seconds -= phase.seconds
    return phases[-1].colour


def slice_by_time(data: bytes, timeslice: float) -> list[tuple[float, bytes]]:
    """(media start seconds, bytes) per chunk, each beginning at the first block at or after k × timeslice."""
    with av.open(io.BytesIO(data), format="webm") as container:
        blocks = [(float(p.pts * p.time_base), p.pos) for p in container.demux() if p.size and p.pos is not None]
    blocks.sort(key=lambda b: b[1])
    cuts, k = [(0.0, 0)], 1
    for seconds, pos in blocks:
        if seconds >= k * timeslice and pos > cuts[-1][1]:
            cuts.append((seconds, pos))
            k = math.floor(seconds / timeslice) + 1
    bounds = [pos for _, pos in cuts] + [len(data)]
    return [(start, data[a:b]) for (start, _), a, b in zip(cuts, bounds, bounds[1:])]


def decoded_colours(path) -> list[tuple[float, str]]:
    """(time, nearest colour) of every decoded video frame."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane = bytes(frame.planes[2])
            v = sum(plane[:32]) / 32  # within the first row: rows are padded
            out.append((frame.time, min(COLOURS, key=lambda c: abs(COLOURS[c][2] - v))))
    return out


def _picture(index: int, colour: str, width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, value in zip(frame.planes, COLOURS[colour]):
        plane.update(bytes([value]) * plane.buffer_size)
    frame.pts, frame.time_base = index, Fraction(1, FPS)
    return frame


_TONE = array.array(
    "h", (round(6000 * math.sin(2 * math.pi * 400 * k / SAMPLE_RATE)) for k in range(OPUS_FRAME))).tobytes()
