"""Video after a pause cut, made decodable without waiting for the client's next keyframe.

Browsers send a keyframe only every ~100 frames (3-5 s), and the frames after a cut refer to pictures that
were cut. Waiting for the next keyframe would freeze the picture for seconds; copying the frames as they are
would smear it. So the frames from the cut to the next keyframe are decoded (starting at the keyframe before
them, inside or before the cut) and encoded again, the first as a keyframe: a few dozen frames per cut.
Only VP8 and VP9 are bridged (their encoders need no codec private data, so the stream-copy output stays
valid); other codecs wait for their next keyframe as before.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av

log = logging.getLogger(__name__)

ENCODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
"""Decoder codec → the encoder whose output a stream copy of that codec can carry."""

ENCODER_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
"""One packet per frame, at once, and no hidden alt-ref frames: a bridged frame replaces exactly one frame."""

BRIDGE_BIT_RATE = 2_000_000
"""Generous for a few seconds of video, so the bridged frames stay close to the original pictures."""

MAX_BRIDGE_FRAMES = 300
"""Frames re-encoded per cut at most (10 s at 30 fps; browsers send a keyframe every ~100 frames): past it the
picture holds until the client's next keyframe, so a client that rarely sends one cannot turn finalize into a
transcode. (The client's own frames cannot follow bridged ones: VP8/VP9 frames carry entropy state from the
frames before them, and would not decode.)"""

MAX_GOP_PACKETS = 3_000
"""Packets kept since the last keyframe (about 100 s at 30 fps): past this a bridge is impossible, and the
video waits for a keyframe instead; bounds memory for a client that never sends one."""


@dataclass
class _Held:
    data: bytes
    pts: int
    dts: int


class KeyframeBridge:
    """One video track of one segment: remembers the packets since its last keyframe and, after a cut,
    re-encodes until the next keyframe. Packets in and out carry the input's unshifted timestamps."""

    def __init__(self, codec: str, time_base: Fraction, width: int, height: int) -> None:
        self.codec = codec
        self.time_base = time_base
        self.width, self.height = width, height
        self._supported = codec in ENCODERS
        self._gop: list[_Held] | None = [] if self._supported else None
        """Packets since the last keyframe; None until the next one when bridging is impossible meanwhile."""
        self._decoder: av.CodecContext | None = None
        self._encoder: av.CodecContext | None = None
        self.frames = 0
        """Frames re-encoded since the cut."""
        self.exhausted = False
        """MAX_BRIDGE_FRAMES reached: nothing more is bridged until the client's next keyframe."""

    def remember(self, packet: av.Packet, pts: int, dts: int) -> None:
        """Every packet of the track passes here first; a keyframe starts the list again."""
        if not self._supported:
            return
        if packet.is_keyframe:
            self._gop = []
            self.exhausted = False
        if self._gop is None:
            return
        if len(self._gop) < MAX_GOP_PACKETS:
            self._gop.append(_Held(bytes(packet), pts, dts))
        else:
            self._gop = None  # too long without a keyframe: no bridging until the next one
            log.warning("%s track: no keyframe in %d packets; video after a pause waits for one", self.codec,
                        MAX_GOP_PACKETS)

    def bridge(self) -> Iterator[av.Packet]:
        """Re-encode the packet just remembered (the newest): its picture, decoded from the last keyframe on."""
        if self._gop is None or not self._gop or self.exhausted:
            return
        if self.frames >= MAX_BRIDGE_FRAMES:
            yield from self.finish()
            self.exhausted = True
            return
        try:
            if self._decoder is None:
                self._start()
                frames = [f for held in self._gop for f in self._decode(held)]
            else:
                frames = list(self._decode(self._gop[-1]))
            for frame in frames[-1:] if self.frames == 0 else frames:
                yield from self._encode(frame)
        except av.FFmpegError as exc:
            log.warning("%s track: bridging after a pause failed (%s); waiting for a keyframe", self.codec, exc)
            self._reset()
            self._gop = None

    def finish(self) -> Iterator[av.Packet]:
        """The client's keyframe arrived: flush the encoder and let the original frames through again."""
        if self._encoder is None:
            return
        try:
            yield from self._encode(None)
        except av.FFmpegError:
            pass
        self._reset()

    @property
    def active(self) -> bool:
        return self._encoder is not None

    def _start(self) -> None:
        self._decoder = av.CodecContext.create(self.codec, "r")
        encoder = av.CodecContext.create(ENCODERS[self.codec], "w")
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, "yuv420p"
        encoder.time_base = self.time_base
        encoder.bit_rate = BRIDGE_BIT_RATE
        encoder.options = dict(ENCODER_OPTIONS)
        self._encoder = encoder
        self.frames = 0

    def _decode(self, held: _Held) -> list[av.VideoFrame]:
        packet = av.Packet(held.data)
        packet.pts, packet.dts, packet.time_base = held.pts, held.dts, self.time_base
        frames = self._decoder.decode(packet)  # type: ignore[union-attr]
        for frame in frames:
            frame.pts, frame.time_base = held.pts, self.time_base
        return frames  # type: ignore[return-value]

    def _encode(self, frame: av.VideoFrame | None) -> Iterator[av.Packet]:
        if frame is not None:
            if (frame.width, frame.height) != (self.width, self.height) or frame.format.name != "yuv420p":
                frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
            frame.pict_type = av.video.frame.PictureType.I if self.frames == 0 else av.video.frame.PictureType.NONE
            self.frames += 1
        for packet in self._encoder.encode(frame):  # type: ignore[union-attr]
            packet.time_base = self.time_base
            if packet.dts is None:
                packet.dts = packet.pts
            yield packet

    def _reset(self) -> None:
        self._decoder = self._encoder = None
