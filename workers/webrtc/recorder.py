"""A participant's forwarded frames → numbered WebM segments, handed to the same intake as uploaded chunks.

The browser's VP8 and Opus frames are muxed as they came (no decode, no encode) into one live WebM stream
(audio and video together, as MediaRecorder writes them); every segment_seconds the bytes written so far become
the next chunk of the participant's "video" stream. The first chunk starts with the WebM header; the last one,
written when the room stops, carries `final`, so finalize may start at once. A reconnect starts a new recorder
whose first chunk carries a new header right after the last sequence held: finalize joins it on.

The video stream is sized from the first key frame before anything is muxed (aiortc's own MediaRecorder opens
its encoders at a default size and then loses every video frame: FIELD-NOTES).
"""
from __future__ import annotations

import functools
import io
import logging
import time
from fractions import Fraction
from typing import Callable

import av

from workers.webrtc.forwarding import EncodedFrame

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)
MAX_HELD_AUDIO = 500
"""Audio frames (20 ms each: 10 s) held while waiting for the first video key frame; older ones are dropped."""
Sink = Callable[[int, bytes, bool, float], None]
"""(sequence, bytes, final, wall-clock ms at the segment's start) → stores one chunk or raises."""


class _Bytes(io.RawIOBase):
    """A write-only, non-seekable target: the muxer writes a live WebM (unknown sizes, no rewriting)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class _Clock:
    """Maps one track's RTP timestamps to milliseconds since the recorder began, anchored at its first frame's
    arrival (aiortc starts every track's timestamps at 0; the wall clock lines audio and video up)."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.origin: tuple[int, float] | None = None
        self.last = -1

    def ms(self, frame: EncodedFrame, arrived: float) -> int:
        if self.origin is None:
            self.origin = (frame.timestamp, (arrived - self.began) * 1000)
        rtp0, at = self.origin
        value = int(round(at + (frame.timestamp - rtp0) * 1000 / frame.clock_rate))
        value = max(value, self.last + 1)  # strictly increasing per stream: the muxer refuses anything else
        self.last = value
        return value


@functools.lru_cache(maxsize=16)
def _templates(size: tuple[int, int]) -> av.container.InputContainer:
    """A one-frame WebM (VP8 at `size`, stereo 48 kHz Opus) whose streams are the recorder's templates: made once
    per frame size (a few ms of encoding), held open while cached (a stream template needs its container)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        video = container.add_stream("vp8", rate=30)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        audio = container.add_stream("opus", rate=48000)
        audio.layout = "stereo"
        frame = av.VideoFrame(size[0], size[1], "yuv420p")
        frame.pts = 0
        container.mux([*video.encode(frame), *video.encode(None)])
        sound = av.AudioFrame(format="s16", layout="stereo", samples=960)
        sound.sample_rate, sound.pts = 48000, 0
        for plane in sound.planes:
            plane.update(bytes(plane.buffer_size))
        container.mux([*audio.encode(sound), *audio.encode(None)])
    return av.open(io.BytesIO(buffer.getvalue()))


class SegmentRecorder:
    """Not thread-safe: add(), cut() and finish() are called from the media loop only."""

    def __init__(self, sink: Sink, first_sequence: int, with_video: bool, with_audio: bool,
                 segment_seconds: float = 1.0, now: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.sequence = first_sequence
        self.with_video, self.with_audio = with_video, with_audio
        self.segment_seconds = segment_seconds
        self.now = now
        self.began = now()
        self.clocks = {"video": _Clock(self.began), "audio": _Clock(self.began)}
        self.buffer = _Bytes()
        self.container: av.container.OutputContainer | None = None
        self.streams: dict[str, av.stream.Stream] = {}
        self.held_audio: list[tuple[EncodedFrame, float]] = []
        self.segment_began = self.began
        self.frames = {"video": 0, "audio": 0}
        self.finished = False
        self.media_began: float | None = None
        """Wall-clock arrival of the first frame written (the end of a reconnect gap)."""
        self.media_ended: float | None = None
        """Wall-clock arrival of the last frame written so far (where a gap would begin)."""

    @property
    def waiting_for_keyframe(self) -> bool:
        return self.with_video and self.container is None

    def add(self, frame: EncodedFrame, arrived: float | None = None) -> None:
        if self.finished or (frame.kind == "video" and not self.with_video) or (frame.kind == "audio" and not self.with_audio):
            return
        arrived = self.now() if arrived is None else arrived
        if self.container is None:
            if frame.kind == "audio" and self.with_video:
                self.held_audio = (self.held_audio + [(frame, arrived)])[-MAX_HELD_AUDIO:]
                return
            size = frame.vp8_size() if frame.kind == "video" else None
            if frame.kind == "video" and size is None:
                return  # nothing decodable before a key frame; the session asks the sender for one
            self._open(size)
            self.media_began = self.held_audio[0][1] if self.held_audio else arrived
            for held, at in self.held_audio:
                self._mux(held, at)
            self.held_audio = []
        self._mux(frame, arrived)

    def _open(self, size: tuple[int, int] | None) -> None:
        """Streams copied from a template (muxing only): PyAV opens an encoder for a stream made with add_stream,
        and an unused libvpx encoder holds ~8 MB per recording peer; a template stream opens none."""
        options = {"live": "1", "cluster_time_limit": str(int(self.segment_seconds * 1000))}
        self.container = av.open(self.buffer, "w", format="webm", options=options)
        if size is not None:
            video = self.container.add_stream_from_template(_templates(size).streams.video[0])
            video.time_base = MS
            self.streams["video"] = video
        if self.with_audio:
            audio = self.container.add_stream_from_template(_templates((16, 16)).streams.audio[0])
            audio.time_base = MS
            self.streams["audio"] = audio

    def _mux(self, frame: EncodedFrame, arrived: float) -> None:
        stream = self.streams.get(frame.kind)
        if stream is None or self.container is None:
            return
        packet = av.Packet(frame.data)
        packet.stream = stream
        packet.time_base = MS
        packet.pts = packet.dts = self.clocks[frame.kind].ms(frame, arrived)
        packet.is_keyframe = frame.keyframe
        self.container.mux(packet)
        self.frames[frame.kind] += 1
        self.media_ended = arrived

    def due(self) -> bool:
        return self.now() - self.segment_began >= self.segment_seconds

    def cut(self) -> bool:
        """Hand the bytes written since the last cut to the sink as the next sequence; False when there were none."""
        data = self.buffer.take()
        began, self.segment_began = self.segment_began, self.now()
        if not data:
            return False
        self.sink(self.sequence, data, False, began * 1000)
        self.sequence += 1
        return True

    def abandon(self) -> None:
        """Stop without storing anything more (a newer peer took over): the muxer and its encoder are freed now,
        not whenever the garbage collector gets to them."""
        if self.finished:
            return
        self.finished = True
        if self.container is not None:
            try:
                self.container.close()
            except av.FFmpegError:
                pass
        self.buffer.take()

    def finish(self, final: bool) -> None:
        """Close the WebM (its last cluster) and store what is left; `final` declares the stream's end."""
        if self.finished:
            return
        self.finished = True
        if self.container is not None:
            try:
                self.container.close()
            except av.FFmpegError as exc:  # a muxer error must not lose the bytes already written
                log.warning("webrtc recorder close failed: %s", exc)
        data = self.buffer.take()
        if data:
            self.sink(self.sequence, data, final, self.segment_began * 1000)
            self.sequence += 1
        # No bytes left (nothing was recorded, or all was cut already): no final marker, the grace period closes.
