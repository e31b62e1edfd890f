"""`format: mp4` while recording: each live window, already remuxed as batch would (workers/live/window.py), is
transcoded to H.264/AAC with the batch path's settings (workers/media/convert.py) into a small Matroska file whose
Clusters the live output appends; at stop that Matroska file is copied into a faststart MP4 by to_mp4's copy path.

A fresh encoder per window is what makes windows independent (a step holds nothing between runs), and each of its
seams needs care, done here:

- Video: a window may begin on a non-keyframe, so decoding starts at the last keyframe before it (kept in a small
  context file, `context`), and what those packets decode to is not encoded again. A fresh x264 starts on an IDR,
  so windows concatenate; its SPS/PPS must be the first window's (extradata compared), else Unsupported.
- Audio: AAC frames are 1024 samples and each fresh encoder primes (1024 samples of delay). The windows share one
  grid of 1024-sample frames counted from the stream's first decoded sample (the batch encoder's grid), so the
  n-th AAC packet of the live output is the n-th of batch. A window encodes from a few frames before its first
  packet (decoded from the context, so the Opus decoder is warm too) and drops what it already wrote; it keeps
  back the last frame, whose packet needs the next window's samples.
- Timestamps are those of the remuxed window (batch's shifted ones); each AAC frame's is the one batch's encoder
  gets for the same samples.

What cannot be done this way (keyframes further apart than MAX_CONTEXT_SECONDS, a track set that changed, different
extradata) raises Unsupported, and the participant goes to batch.
"""
from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from workers.live.mp4_output import RawPacket, source_params
from workers.live.source import Unsupported
from workers.media.convert import AUDIO_RATE, plan_track
from workers.media.demux import describe_av_error
from workers.media.encoding import Mp4Settings
from workers.media.errors import MediaError

AAC_FRAME = 1024
"""Samples per AAC frame."""

WARMUP_FRAMES = 4
"""AAC frames a fresh encoder encodes (and drops) before a window's first packet, so its psychoacoustic state and
block switching have settled where the previous window stopped."""

HELD_FRAMES = 2
"""AAC frames left at a window's end for the next window: a packet's MDCT covers its frame and the next one, and the
encoder looks one frame further to choose its block size."""

AUDIO_CONTEXT_SECONDS = 0.5
"""Audio kept for the next window's warm-up: covers HELD + WARMUP frames (128 ms) and a warm Opus decoder."""

MAX_CONTEXT_SECONDS = 30.0
"""A context reaching back further (video keyframes further apart) is left to batch: each window would decode it."""

SAMPLE_TIME_BASE = Fraction(1, AUDIO_RATE)


@dataclass
class TranscodeCarry:
    """What one window's transcode leaves to the next, per output track (the remuxed window's track order)."""

    methods: list[str] = field(default_factory=list)
    """"copy" or "transcode" per track, fixed by the first window."""
    extradata: list[str] = field(default_factory=list)
    """SHA-256 of each track's codec extradata (SPS/PPS, AudioSpecificConfig) in the first window."""
    keyint: int = 0
    """The x264 keyframe interval, fixed by the first window (batch derives it from the frame rate)."""
    origin: list[int] = field(default_factory=list)
    """Audio tracks: pts (1/48000 s) of the stream's first decoded sample, -1 until the track's audio began."""
    samples: list[int] = field(default_factory=list)
    """Audio tracks: samples decoded from every window so far (where the next window's first sample lies)."""
    packets: list[int] = field(default_factory=list)
    """Audio tracks: AAC packets written so far; the next window writes from this index on."""

    def to_json(self) -> dict:
        return {"methods": self.methods, "extradata": self.extradata, "keyint": self.keyint, "origin": self.origin,
                "samples": self.samples, "packets": self.packets}

    @classmethod
    def from_json(cls, data: dict) -> TranscodeCarry:
        return cls(data["methods"], data["extradata"], data["keyint"], data["origin"], data["samples"],
                   data["packets"])


@dataclass
class _Audio:
    """One audio track's decode → 1024-sample grid → AAC encode for this window.

    Each 1024-sample frame gets the time batch's encoder input gets from libavfilter (PyAV's frame-size resampler):
    the time of the decoded frame holding its first sample, plus that sample's offset rounded to the frame's time
    base. So the AAC track follows the recording's timestamps, as batch's does, not a sample count that would
    drift from the video where the browser's audio timestamps leap."""

    index: int
    out: av.AudioStream
    first: int
    """Index of the first AAC packet this window writes."""
    fifo: av.AudioFifo = field(default_factory=av.AudioFifo)
    position: int = 0
    """Global sample index of the fifo's first sample."""
    times: list = field(default_factory=list)
    """(global index of its first sample, samples, pts, time base) of each decoded frame in the fifo."""
    numbered: int | None = None
    """The grid frame this window's encoder began on: its first packet (the priming one) has this number."""
    packets: list = field(default_factory=list)

    def push(self, frame: av.AudioFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            raise Unsupported("a decoded audio frame without a timestamp")
        self.times.append((self.position + self.fifo.samples, frame.samples, frame.pts, frame.time_base))
        frame.pts = None  # the fifo only checks continuity; _timed gives each grid frame batch's time
        self.fifo.write(frame)

    def encode_ready(self, final: bool) -> None:
        """Encode every complete frame of the grid in the fifo (and, at stop, the last partial one)."""
        while self.fifo.samples >= AAC_FRAME or (final and self.fifo.samples):
            self._encode(self.fifo.read(min(AAC_FRAME, self.fifo.samples)))

    def _encode(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            if self.numbered is None:
                self.numbered = self.position // AAC_FRAME
            frame.pts, frame.time_base = self._timed(self.position)
            self.position += frame.samples
        self.packets.extend(self.out.encode(frame))

    def _timed(self, sample: int) -> tuple[int, Fraction]:
        while self.times and self.times[0][0] + self.times[0][1] <= sample:
            self.times.pop(0)
        if not self.times or self.times[0][0] > sample:
            raise Unsupported("a grid frame's first sample has no decoded frame")
        begin, _samples, pts, time_base = self.times[0]
        offset = Fraction(sample - begin, AUDIO_RATE) / time_base
        return pts + math.floor(offset + Fraction(1, 2)), time_base  # av_rescale_q: to nearest, halves up

    def finish(self, final: bool) -> int:
        """Flush the encoder; keep the packets from `first` up to what the samples so far fully determine. Returns
        the index of the next packet to write."""
        total = self.position + self.fifo.samples
        self.encode_ready(final)
        self._encode(None)
        last = math.inf if final else total // AAC_FRAME - HELD_FRAMES
        numbered = self.numbered if self.numbered is not None else self.first
        self.packets = [packet for number, packet in enumerate(self.packets, numbered)
                        if self.first <= number < last]
        return self.first + len(self.packets)


@dataclass
class Captured:
    """A window's encoded packets as they went into its Matroska file (their encoders' own timestamps and bytes),
    and its source streams: what the live MP4 is written from (workers/live/mp4_output.py)."""

    packets: list[RawPacket] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)


def transcode_window(window: Path, context: Path | None, target: Path, new_context: Path, carry: TranscodeCarry,
                     settings: Mp4Settings, final: bool, captured: Captured | None = None) -> None:
    """Transcode the remuxed window into `target` (Matroska, H.264/AAC, seekable), decoding from `context` first
    where a track needs it; write the next window's context to `new_context`; update `carry`; hand the packets to
    `captured` when given."""
    try:
        _transcode(window, context, target, carry, settings, final, captured)
        if not final:
            _write_context(window, context, new_context, carry)
    except av.FFmpegError as exc:
        raise MediaError(f"could not transcode a live window: {describe_av_error(exc)}") from exc


def _transcode(window: Path, context: Path | None, target: Path, carry: TranscodeCarry, settings: Mp4Settings,
               final: bool, captured: Captured | None) -> None:
    with av.open(str(window)) as src, av.open(str(target), "w", format="matroska") as dst:
        streams = [s for s in src.streams if s.type in ("audio", "video")]
        if captured is not None:
            captured.sources = [source_params(s) for s in streams]
        first = not carry.methods
        if first:
            carry.keyint = round(2 * float(next((s.average_rate for s in streams if s.type == "video"
                                                 and s.average_rate), 30)))
        tracks = [plan_track(dst, s, settings, keyint=carry.keyint) for s in streams]
        methods = ["copy" if t.copy else "transcode" for t in tracks]
        if first:
            carry.methods = methods
            carry.origin = [-1] * len(tracks)
            carry.samples = [0] * len(tracks)
            carry.packets = [0] * len(tracks)
        elif methods != carry.methods:
            raise Unsupported("the window's tracks differ from the first window's")
        audio = {i: _Audio(i, t.out, carry.packets[i]) for i, t in enumerate(tracks)
                 if not t.copy and t.out.type == "audio"}
        keep_pts = {i: set() for i, t in enumerate(tracks) if not t.copy and t.out.type == "video"}
        out_packets: list = []
        with av.open(str(context)) if context is not None else nullcontext() as ctx:
            if ctx is not None:
                _decode_context(ctx, streams, tracks, audio, carry)
            for i, sink in audio.items():
                _start_grid(sink, carry.samples[i])
            window_samples = dict.fromkeys(audio, 0)
            for packet in src.demux(*streams):
                i = streams.index(packet.stream)
                track = tracks[i]
                if track.copy:
                    if packet.size:
                        packet.stream = track.out
                        out_packets.append(packet)
                    continue
                if i in keep_pts and packet.pts is not None:
                    keep_pts[i].add(packet.pts)
                if i in audio and carry.origin[i] >= 0 and packet.size and packet.has_sidedata("skip_samples"):
                    packet = _without_start_skip(packet)
                for frame in streams[i].codec_context.decode(packet):
                    if i in audio:
                        if carry.origin[i] < 0:
                            carry.origin[i] = round(frame.pts * frame.time_base / SAMPLE_TIME_BASE) \
                                if frame.pts is not None else 0
                        window_samples[i] += frame.samples
                        audio[i].push(frame)
                        audio[i].encode_ready(False)
                    else:
                        out_packets.extend(_encode_video(track, frame, keep_pts[i]))
            for i, track in enumerate(tracks):  # demux() ended with an empty packet per track: decoders flushed
                if track.copy:
                    continue
                if i in audio:
                    carry.packets[i] = audio[i].finish(final)
                    carry.samples[i] += window_samples[i]
                    out_packets.extend(audio[i].packets)
                else:
                    out_packets.extend(track.flush())
        _check_extradata(tracks, carry, first)
        outs = [t.out for t in tracks]
        for packet in sorted(out_packets, key=lambda p: float((p.dts if p.dts is not None else p.pts or 0)
                                                            * p.time_base)):
            if captured is not None:  # before the mux, which moves timestamps to the Matroska track's time base
                captured.packets.append(RawPacket(
                    outs.index(packet.stream), packet.pts, packet.dts if packet.dts is not None else packet.pts,
                    packet.duration, packet.time_base, packet.is_keyframe, bytes(packet)))
            dst.mux(packet)


def _without_start_skip(packet: av.Packet) -> av.Packet:
    """The packet without the start trim that the Matroska demuxer puts on the first packet of every file (Opus
    CodecDelay): only the stream's first packet is trimmed in batch; a later window's first is not."""
    side = bytes(packet.get_sidedata("skip_samples"))
    if len(side) < 8 or not int.from_bytes(side[:4], "little"):
        return packet  # an end trim only (the stream's last packet): batch has it too
    if int.from_bytes(side[4:8], "little"):
        raise Unsupported("a start and an end trim on one audio packet")
    clean = av.Packet(bytes(packet))
    clean.pts, clean.dts, clean.duration, clean.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
    return clean


def _encode_video(track, frame: av.VideoFrame, keep: set[int]) -> list:
    """Encode a decoded frame that belongs to this window (not one decoded from the context only to reach it)."""
    if frame.pts not in keep:
        return []
    frame = frame.reformat(format="yuv420p")
    frame.pict_type = av.video.frame.PictureType.NONE
    return list(track.out.encode(frame))


def _decode_context(ctx, streams, tracks, audio: dict[int, _Audio], carry: TranscodeCarry) -> None:
    """Decode the context's packets (what the window's decoders need before its first packet), encoding nothing;
    audio goes into the grid's fifo, positioned so that its last sample precedes the window's first."""
    by_key = {_key(s): i for i, s in enumerate(streams)}
    ctx_streams = [s for s in ctx.streams if _key(s) in by_key]
    decoded: dict[int, list] = {i: [] for i in audio}
    for packet in ctx.demux(*ctx_streams):
        i = by_key[_key(packet.stream)]
        if tracks[i].copy or not packet.size:  # an empty packet would flush the decoder the window goes on with
            continue
        # the window's own decoder (streams[i]) must see these packets: it carries on from them
        for frame in streams[i].codec_context.decode(packet):
            if i in audio:
                decoded[i].append(frame)
    for i, frames in decoded.items():
        total = sum(f.samples for f in frames)
        audio[i].position = carry.samples[i] - total
        for frame in frames:
            audio[i].push(frame)


def _start_grid(sink: _Audio, window_first_sample: int) -> None:
    """Drop the fifo's samples before the first frame this window encodes: WARMUP_FRAMES before its first packet's
    frame, on the stream's grid. Too little context there (not the stream's start) leaves it to batch."""
    first_frame = max(0, sink.first - 1 - WARMUP_FRAMES)
    start = first_frame * AAC_FRAME
    if sink.fifo.samples == 0 and sink.position == 0:
        sink.position = window_first_sample
    if sink.position > start:
        if sink.first > 0 and sink.position > (sink.first - 1) * AAC_FRAME:
            raise Unsupported("the live audio context does not reach the window's first AAC frame")
        start = -(-sink.position // AAC_FRAME) * AAC_FRAME
    drop = start - sink.position
    if drop > sink.fifo.samples:
        raise Unsupported("the live audio context does not reach the window's first AAC frame")
    if drop:
        sink.fifo.read(drop)
        sink.position = start


def _check_extradata(tracks, carry: TranscodeCarry, first: bool) -> None:
    digests = [hashlib.sha256(bytes(t.out.codec_context.extradata or b"")).hexdigest() for t in tracks]
    if first:
        carry.extradata = digests
    elif digests != carry.extradata:
        raise Unsupported("a window's encoder wrote other codec parameters (SPS/PPS) than the first window's")


def _write_context(window: Path, context: Path | None, target: Path, carry: TranscodeCarry) -> None:
    """The packets the next window's decoders need first: each transcoded video track's from its last keyframe,
    each audio track's last AUDIO_CONTEXT_SECONDS, from the old context and this window, copied."""
    sources = [p for p in (context, window) if p is not None]
    ends: dict[tuple, float] = {}
    keyframes: dict[tuple, float] = {}
    for path in sources:
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.pts is None or not packet.size:
                    continue
                key, seconds = _key(packet.stream), float(packet.pts * packet.time_base)
                ends[key] = max(ends.get(key, -math.inf), seconds)
                if packet.is_keyframe and packet.stream.type == "video":
                    keyframes[key] = max(keyframes.get(key, -math.inf), seconds)
    methods = {}
    with av.open(str(window)) as container:
        for i, stream in enumerate(s for s in container.streams if s.type in ("audio", "video")):
            methods[_key(stream)] = carry.methods[i]
    since: dict[tuple, float] = {}
    for key, end in ends.items():
        if methods.get(key) != "transcode":
            continue
        since[key] = keyframes.get(key, -math.inf) if key[0] == "video" else end - AUDIO_CONTEXT_SECONDS
        if end - since[key] > MAX_CONTEXT_SECONDS:
            raise Unsupported(f"video keyframes further apart than {MAX_CONTEXT_SECONDS:g} s: each window would "
                              "decode from the last one")
    with av.open(str(target), "w", format="matroska") as out:
        outputs = {}
        with av.open(str(window)) as template:  # every track, so track indices match the window's
            for stream in template.streams:
                if stream.type in ("audio", "video"):
                    outputs[_key(stream)] = out.add_stream_from_template(stream, opaque=True)
        for path in sources:
            with av.open(str(path)) as container:
                for packet in container.demux():
                    key = _key(packet.stream)
                    if key not in since or packet.pts is None or not packet.size:
                        continue
                    if float(packet.pts * packet.time_base) >= since[key]:
                        packet.stream = outputs[key]
                        out.mux(packet)


def _key(stream) -> tuple:
    """A track's identity across the window and context files (both hold the batch muxer's track order)."""
    return stream.type, stream.index
