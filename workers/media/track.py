"""One audio or video track of a participant's stream, as demux finds it and the muxer fills it."""
from __future__ import annotations

from dataclasses import dataclass

import av


def codec_name(stream: av.stream.Stream) -> str:
    """The codec's own name ("av1"), not its decoder's ("libdav1d"): what decides WebM and what players read."""
    return stream.codec_context.codec.canonical_name


@dataclass(eq=False)
class Track:
    """One audio or video track of a stream; the muxer fills `output` and counts what it writes."""

    source: str
    """The client's stream type ("video" or "audio") the track came from."""
    position: int
    media_type: str
    """"video" or "audio" as the container says (PyAV's stream.type); a "video" stream may carry audio too."""
    codec: str
    key: tuple[str, str, int]
    template: av.stream.Stream | None
    """Only valid while the first segment is open: PyAV segfaults on a stream of a closed container."""
    width: int | None = None
    height: int | None = None
    output: av.stream.Stream | None = None
    packets: int = 0
    last_dts: float = float("-inf")

    @classmethod
    def of(cls, source: str, position: int, stream: av.stream.Stream, key: tuple[str, str, int]) -> Track:
        """Copy what the result needs out of the stream now, while its container is open."""
        video = stream.type == "video"
        context = stream.codec_context
        return cls(source=source, position=position, media_type=stream.type, codec=codec_name(stream), key=key, template=stream,
                   width=context.width if video else None, height=context.height if video else None)
