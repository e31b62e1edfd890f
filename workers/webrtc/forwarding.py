"""Every use of aiortc internals, in one place (aiortc is pinned to 1.16.0 in requirements.txt for this module).

Forwarding: aiortc reassembles each incoming RTP frame in its jitter buffer and hands it to a decoder thread,
which looks the decoder up through `aiortc.rtcrtpreceiver.get_decoder`. We replace that lookup with a
pass-through whose "decode" returns the encoded frame itself (VP8 or Opus bytes + RTP timestamp), so a remote
track's recv() yields EncodedFrame objects that the recorder muxes into WebM without decoding or re-encoding.
This process only receives media (the server never sends), so replacing the lookup process-wide is safe.

Also here: asking a sender for a key frame (RTCP PLI) and gathering on configured host addresses (aioice never
offers 127.0.0.1 on its own, and operators may want to pin the interfaces).
tests/test_webrtc_forwarding.py checks each of these against the pinned aiortc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.sdp import SessionDescription

AIORTC_VERSION = "1.16.0"
"""The version whose internals this module was written and tested against."""
FORWARDED = ("video/vp8", "audio/opus")
"""Codecs recorded as sent: both are WebM-legal, so segments and outputs stay .webm."""
_original_get_decoder = aiortc.rtcrtpreceiver.get_decoder
_original_host_addresses = aioice.ice.get_host_addresses


@dataclass(frozen=True)
class EncodedFrame:
    """One complete encoded frame as the sender produced it."""

    kind: str
    """'video' or 'audio'."""
    codec: str
    """Lowercase MIME type: 'video/vp8' or 'audio/opus'."""
    data: bytes
    timestamp: int
    """RTP timestamp, starting at 0 for each track (aiortc maps it); clock rate in clock_rate."""
    clock_rate: int

    @property
    def keyframe(self) -> bool:
        """VP8 (RFC 6386 §9.1): bit 0 of the first byte is 0 on a key frame. Audio frames are all 'key'."""
        if self.kind != "video":
            return True
        return bool(self.data) and not self.data[0] & 1

    def vp8_size(self) -> tuple[int, int] | None:
        """A VP8 key frame's width and height (after the 3-byte tag and the 9d 01 2a start code)."""
        if not self.keyframe or len(self.data) < 10 or self.data[3:6] != b"\x9d\x01\x2a":
            return None
        width = int.from_bytes(self.data[6:8], "little") & 0x3FFF
        height = int.from_bytes(self.data[8:10], "little") & 0x3FFF
        return width, height


class _PassThrough:
    """Stands where aiortc expects a decoder: returns the encoded frame instead of pictures or samples."""

    def __init__(self, kind: str, codec: str, clock_rate: int) -> None:
        self.kind, self.codec, self.clock_rate = kind, codec, clock_rate

    def decode(self, encoded_frame) -> list[EncodedFrame]:  # type: ignore[no-untyped-def]
        return [EncodedFrame(self.kind, self.codec, bytes(encoded_frame.data), int(encoded_frame.timestamp),
                             self.clock_rate)]


def _get_decoder(codec):  # type: ignore[no-untyped-def]
    mime = codec.mimeType.lower()
    if mime in FORWARDED:
        return _PassThrough(mime.split("/")[0], mime, codec.clockRate)
    return _original_get_decoder(codec)


def install(host_addresses: Iterable[str] = ()) -> None:
    """Turn on forwarding (idempotent) and, when given, gather only on these host addresses."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(f"workers/webrtc/forwarding.py relies on aiortc {AIORTC_VERSION} internals, "
                           f"found {aiortc.__version__}")
    aiortc.rtcrtpreceiver.get_decoder = _get_decoder
    addresses = list(host_addresses)
    if addresses:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
            a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
    else:
        aioice.ice.get_host_addresses = _original_host_addresses


def offered_codecs(sdp: str) -> dict[str, set[str]]:
    """mid → the lowercase MIME types the offer lists in that m-section."""
    parsed = SessionDescription.parse(sdp)
    return {media.rtp.muxId: {codec.mimeType.lower() for codec in media.rtp.codecs} for media in parsed.media}


def prefer_forwarded_codecs(transceiver: RTCRtpTransceiver, offered: set[str] | None = None) -> bool:
    """Limit a transceiver to VP8 / Opus (what is forwarded into WebM); False when the peer offers neither
    (`offered`: the MIME types its m-section lists; None trusts aiortc's own list)."""
    caps = RTCRtpReceiver.getCapabilities(transceiver.kind)
    wanted = [c for c in (caps.codecs if caps else []) if c.mimeType.lower() in FORWARDED or c.mimeType.lower() == "video/rtx"]
    if not any(c.mimeType.lower() in FORWARDED and (offered is None or c.mimeType.lower() in offered) for c in wanted):
        return False
    transceiver.setCodecPreferences(wanted)
    return True


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send an RTCP PLI to every active source of a video receiver; True when one was sent."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)  # noqa: SLF001 - the one internal call for key frames
    return bool(sources)
