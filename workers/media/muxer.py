"""Remux a participant's chunk streams into one seekable file by stream copy (no re-encode): browsers
write WebM without Duration or Cues, so only a remux to a real file makes a recording seekable."""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av

from workers.media.cuts import StreamCuts
from workers.media.demux import ChunkDemuxer, describe_av_error
from workers.media.track import Track
from workers.media.errors import MediaError

log = logging.getLogger(__name__)

WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})
"""Codecs the WebM profile allows; anything else (H.264 from Chromium) needs plain Matroska."""

EXTENSIONS = {"webm": "webm", "matroska": "mkv"}
"""File extension per output format."""

PROGRESS_STEP = 0.01
"""Report progress at most once per 1% of the input bytes."""

PROGRESS_EVERY_PACKETS = 64
"""Check the byte position only every few packets: the cost of muxing is per packet."""

START_LOOKAHEAD_SECONDS = 2.0
"""How far past the first packet the output's earliest presentation time is looked for (interleaving and
B-frames put a slightly earlier packet after a later one, never seconds after)."""

Packets = Iterator[tuple[float, Track, av.Packet]]


@dataclass(frozen=True)
class StreamInput:
    stream_type: str
    """"video" or "audio": the client's stream type, not the media type of the tracks inside it."""
    chunks: list[tuple[int, Path]]
    """(sequence, path) of the chunks present, sorted by sequence; holes are simply absent."""
    cuts: StreamCuts | None = None
    """Paused spans to cut when the client kept recording through a pause (workers/media/cuts.py)."""


@dataclass(frozen=True)
class TrackInfo:
    media_type: str
    codec: str
    source: str
    packets: int
    width: int | None = None
    height: int | None = None

    def to_json(self) -> dict:
        """The output's `tracks` entry: the wire keeps the word "kind" for the media type."""
        return {"kind": self.media_type, "codec": self.codec, "source": self.source, "packets": self.packets,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class MuxResult:
    path: Path
    format: str
    bytes: int
    duration_seconds: float
    tracks: list[TrackInfo]
    segments: int
    dropped_chunks: list[int]
    dropped_packets: int = 0
    """Packets left out because their timestamp went backwards or leapt ahead alone (corrupt input)."""
    start_seconds: float = 0.0
    """Container time of the output's first frame, which the output was moved back to 0 from: the output's
    offset on the recording's timeline is its first chunk's client time plus this. 0 when the media starts at
    0 or a few ms before it (codec priming such as Opus pre-skip, which is not media)."""
    timestamp_repairs: int = 0
    """Jumps inside a segment repaired so the output plays on: pauses collapsed, restarts without a header joined."""
    paused_seconds_cut: float = 0.0
    """Media recorded inside pauses and cut out (a client that kept recording; workers/media/cuts.py)."""
    dropped_by_stream: dict[str, list[int]] = field(default_factory=dict)
    """Stream type → sequences that could not be demuxed (left out of the output; status lists them missing)."""


def output_format_for(codecs: Iterable[str]) -> str:
    """WebM when every codec is WebM-legal, so players get the stricter, better supported profile."""
    return "webm" if all(codec in WEBM_CODECS for codec in codecs) else "matroska"


def mux_participant(
    inputs: list[StreamInput],
    output_dir: Path,
    basename: str,
    progress: Callable[[float], None] | None = None,
) -> MuxResult:
    """Write every audio and video track of a participant's streams into `<basename>.<ext>`."""
    if not inputs:
        raise MediaError("participant has no streams to mux")
    sources: list[ChunkDemuxer] = []
    try:
        for item in inputs:
            sources.append(ChunkDemuxer(item.stream_type, item.chunks, item.cuts))
            sources[-1].open_first()
        tracks = _track_order(sources)
        fmt = output_format_for(track.codec for track in tracks)
        final = Path(output_dir) / f"{basename}.{EXTENSIONS[fmt]}"
        dropped_packets, start = _write(sources, tracks, fmt, final, _Progress(progress, sources))
    finally:
        for source in sources:
            source.close()
    for source in sources:
        if source.paused_packets:
            log.info("%s stream: cut %.3f s of media recorded while paused (%d packets)", source.stream_type,
                     source.paused_seconds, source.paused_packets)
    return MuxResult(
        path=final,
        format=fmt,
        bytes=final.stat().st_size,
        duration_seconds=verify_seekable(final),
        tracks=[_info(track) for track in tracks],
        segments=sum(source.segment_count for source in sources),
        dropped_chunks=sorted(sequence for source in sources for sequence in source.dropped),
        dropped_packets=dropped_packets + sum(source.spikes + source.left_out for source in sources),
        start_seconds=round(start, 6),
        timestamp_repairs=sum(source.repairs for source in sources),
        paused_seconds_cut=round(max((source.paused_seconds for source in sources), default=0.0), 3),
        dropped_by_stream={source.stream_type: sorted(source.dropped) for source in sources if source.dropped},
    )


def _track_order(sources: list[ChunkDemuxer]) -> list[Track]:
    """Video first, then audio with the "audio" stream's ahead: players pick the first audio track."""

    def rank(track: Track) -> tuple[int, int, int, int]:
        own_stream = 0 if track.source == track.media_type else 1
        source = next(i for i, s in enumerate(sources) if track in s.tracks)
        return (0 if track.media_type == "video" else 1), own_stream, source, track.position

    tracks = sorted((track for source in sources for track in source.tracks), key=rank)
    if not tracks:
        raise MediaError("no audio or video track found in the participant's streams")
    return tracks


def _write(sources: list[ChunkDemuxer], tracks: list[Track], fmt: str, final: Path,
           progress: _Progress) -> tuple[int, float]:
    """Mux into a `.part` file and rename it, so a half-written output is never taken for a result; returns
    (packets dropped, seconds the output was moved back by)."""
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(part), mode="w", format=fmt) as output:
            for track in tracks:
                track.output = _output_stream(output, track, fmt)
                track.template = None
            dropped, start = _interleave(sources, output, progress)
        for source in sources:
            if not any(track.packets for track in source.tracks):
                raise MediaError(f"the {source.stream_type} stream has no readable media")
        os.replace(part, final)
    except av.FFmpegError as exc:
        raise MediaError(f"could not write the {fmt} output: {describe_av_error(exc)}") from exc
    finally:
        part.unlink(missing_ok=True)
    progress.finish()
    return dropped, start


def _output_stream(output: av.container.OutputContainer, track: Track, fmt: str) -> av.stream.Stream:
    """A stream-copy twin of the track's stream; opaque, because its decoder (libdav1d) may name no encoder."""
    try:
        return output.add_stream_from_template(track.template, opaque=True)
    except ValueError as exc:  # the format cannot hold the codec (PyAV checks avformat_query_codec)
        raise MediaError(f"the {fmt} output cannot hold the {track.media_type} codec {track.codec}") from exc


def _interleave(sources: list[ChunkDemuxer], output: av.container.OutputContainer,
                progress: _Progress) -> tuple[int, float]:
    """Merge the sources' packets by time, so separate audio and video streams interleave correctly, and move
    them all back by the same amount so the output starts at its first frame."""
    dropped = 0
    feeds = [source.packets() for source in sources]
    merged, start = _timeline_start(feeds[0] if len(feeds) == 1 else heapq.merge(*feeds, key=lambda item: item[0]))
    for done, (seconds, track, packet) in enumerate(merged):
        if not write_shifted(output, track, packet, seconds, start):
            dropped += 1
            continue
        if done % PROGRESS_EVERY_PACKETS == 0:
            progress.update()
    if dropped:
        log.warning("dropped %d packets whose timestamps went backwards", dropped)
    return dropped, start


def write_shifted(output: av.container.OutputContainer, track, packet: av.Packet, seconds: float,
                  start: float) -> bool:
    """Move one packet back by `start` and mux it on its track's output stream; False when its time went backwards
    further than _clamp can mend, and it was dropped. The batch muxer and the live windows both write through here,
    so a live output holds the same packets as the batch file."""
    if start:
        seconds -= start
        ticks = round(start / packet.time_base)
        packet.pts, packet.dts = packet.pts - ticks, packet.dts - ticks
    if seconds >= track.last_dts:
        track.last_dts = seconds
    elif not _clamp(packet, track.last_dts):
        return False
    packet.stream = track.output
    output.mux(packet)
    track.packets += 1
    return True


def _timeline_start(merged: Packets) -> tuple[Packets, float]:
    """The earliest presentation time near the start (never below 0: that is codec priming, not media), and the
    packets again, the few looked at first."""
    buffered, earliest = [], math.inf
    for item in merged:
        buffered.append(item)
        packet = item[2]
        earliest = min(earliest, float(packet.pts * packet.time_base))
        if item[0] - buffered[0][0] > START_LOOKAHEAD_SECONDS:
            break
    start = earliest if math.isfinite(earliest) and earliest > 0 else 0.0
    return itertools.chain(buffered, merged), start


def _clamp(packet: av.Packet, last_seconds: float) -> bool:
    """Lift a late packet's dts to its track's last dts when its pts allows it; False to drop it."""
    dts = round(last_seconds / packet.time_base)
    if packet.pts is None or packet.pts < dts:
        return False
    packet.dts = dts
    return True


def _info(track: Track) -> TrackInfo:
    return TrackInfo(track.media_type, track.codec, track.source, track.packets, track.width, track.height)


def verify_seekable(path: Path) -> float:
    """Reopen the output and seek to its middle: without Duration and Cues it would be as unseekable as the input."""
    try:
        with av.open(str(path)) as container:
            duration = container.duration
            if not duration or duration <= 0:
                raise MediaError("the output has no duration; the muxer could not finalize it")
            container.seek(duration // 2)
            if next(iter(container.demux()), None) is None:
                raise MediaError("the output has no media after seeking to its middle")
    except av.FFmpegError as exc:
        raise MediaError(f"the output cannot be read back: {describe_av_error(exc)}") from exc
    return duration / av.time_base


class _Progress:
    """Bytes demuxed over bytes present, reported to the callback at most every PROGRESS_STEP."""

    def __init__(self, callback: Callable[[float], None] | None, sources: list[ChunkDemuxer]) -> None:
        self._callback = callback
        self._sources = sources
        self._total = sum(source.total_bytes for source in sources) or 1
        self._reported = 0.0

    def update(self) -> None:
        if self._callback is None:
            return
        fraction = min(1.0, sum(source.consumed_bytes for source in self._sources) / self._total)
        if fraction - self._reported >= PROGRESS_STEP:
            self._reported = fraction
            self._callback(fraction)

    def finish(self) -> None:
        if self._callback is not None and self._reported < 1.0:
            self._reported = 1.0
            self._callback(1.0)
