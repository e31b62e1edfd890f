"""One live window remuxed exactly as the batch muxer would have remuxed those packets in the whole file.

The batch muxer (workers/media/muxer.py) moves every packet back by the timeline start and lifts a late dts
to its track's last one; a window carries both across windows (LiveTracks), reuses the muxer's own
functions for them, and refuses (Unsupported) whatever would make its packets differ from batch: timestamp
repairs, spikes, a second segment, a track set that changed. Packets keep absolute timestamps, so each
window's Clusters can be appended to the output as they are.

A restarted recorder's run is read from its own header, its media moved by the run's offset (WindowSource.offset),
as batch moves a later segment; a window never holds two runs.

A stream that begins after the first window adds its tracks. Each window is muxed in the batch muxer's track
order, which decides the order of packets with equal timestamps; the output keeps the track numbers each track
got when it first appeared. So `numbers` maps a window's track numbers to the output's. The output's Tracks list
the tracks in batch order, so a reader sees the same streams as in the batch file.
"""
from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av

from workers.live.source import ShortWindow, Unsupported
from workers.media import muxer
from workers.media.demux import ChunkDemuxer, describe_av_error
from workers.media.errors import MediaError
from workers.media.timeline import LEAP_SECONDS


@dataclass
class LiveTracks:
    """What carries from one window to the next, per output track in the batch muxer's order."""

    fmt: str = ""
    start: float | None = None
    """The output's timeline start (the batch muxer's _timeline_start), fixed by the first window."""
    keys: list[list] = field(default_factory=list)
    """Each track's (source stream, media type, codec, rank), in the order the tracks first appeared: the output's
    track number is the position here plus one. A later window must find every one of them."""
    last_dts: list[float] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)
    dropped: int = 0
    last_seen: list[float | None] = field(default_factory=list)
    """Each track's last folded packet's merge time: batch's timeline would see a leap (a restart without a header,
    a pause, a corrupt timecode) between it and the track's next packet, which a window begins with, so that is
    checked across windows as the window's own demuxer checks it inside."""
    folded: float = -math.inf
    """The latest merge time (a packet's dts in its stream's seconds, before the timeline start moves it) of any
    packet folded so far: a stream that begins later joins only when its first packet comes after it."""

    def to_json(self) -> dict:
        return {"fmt": self.fmt, "start": self.start, "keys": self.keys, "lastDts": self.last_dts,
                "packets": self.packets, "dropped": self.dropped, "folded": self.folded, "lastSeen": self.last_seen}

    @classmethod
    def from_json(cls, data: dict) -> LiveTracks:
        return cls(data["fmt"], data["start"], data["keys"], [float(x) for x in data["lastDts"]],
                   list(data["packets"]), data["dropped"], data.get("lastSeen") or [None] * len(data["keys"]),
                   float(data.get("folded", math.inf)))


@dataclass(frozen=True)
class WindowSource:
    """One stream's window file, and where its body (the Clusters after the header) begins in it."""

    stream_type: str
    sequence: int
    path: Path
    body_at: int
    offset: float | None = 0.0
    """Seconds the window's media is moved by (its recorder run's); None for a run's first window after a restart:
    then `ended` less where the run's media begins, as batch moves a later segment."""
    ended: float = 0.0
    clock: dict | None = None
    """The run's timeline repairs so far (SegmentClock.snapshot; {} at a run's start): the window's demuxer goes on
    from them, so it repairs a restart without a header or a pause exactly as batch's one demuxer does. None: not
    carried (several streams), and a window that needs a repair goes to batch."""
    moved: int = 0
    """This window file's byte position plus `moved` is the position in the run (the repairs compare bytes)."""


@dataclass
class _Feed:
    """One source's packets for this window: those before `skip` (a window file position) were folded by the
    last window; those at or after `until` wait for the next, which must begin at the Cluster holding the
    first of them (`deferred`, a window file position). Several sources are merged by time as batch merges
    them, which gives batch's order only when each source's timestamps never go back: else Unsupported."""

    skip: int
    until: float
    ordered: bool
    after: float | None = None
    """For a stream joining after the first window: its first packet must come after this merge time (what was
    folded), or batch's merge would have put it among packets already in the output."""
    deferred: int | None = None
    last: float = -math.inf

    def packets(self, demuxer: ChunkDemuxer) -> Iterator:
        for item in demuxer.packets():
            seconds, _track, packet = item
            if self.after is not None:
                if not seconds > self.after:
                    raise Unsupported("a stream that began later has media from before what was folded, where "
                                      "batch merges it")
                self.after = None
            if self.ordered:
                if seconds < self.last:
                    raise Unsupported("a stream's timestamps go back: batch merges the streams over the whole file")
                self.last = seconds
            if packet.pos is not None and 0 <= packet.pos < self.skip:
                continue
            if seconds >= self.until:
                if packet.pos is None or packet.pos < 0:
                    raise Unsupported("a packet with no file position")
                self.deferred = packet.pos if self.deferred is None else min(self.deferred, packet.pos)
                continue
            yield item


def remux_window(sources: list[WindowSource], target: Path, carried: LiveTracks, final: bool, until: float,
                 skips: list[int], joining: frozenset[str] = frozenset()) -> Window:
    """Remux the window files' packets before `until` (and from each one's skip position on) into the seekable
    `target` (its Cues say where keyframes are), merged by time as the batch muxer merges the streams; updates
    `carried`. `joining` names the streams that begin in this window after the first one: their tracks join the
    output. Raises Unsupported when its packets could differ from the batch path's."""
    demuxers: list[ChunkDemuxer] = []
    try:
        offsets = []
        for source in sources:
            demuxers.append(ChunkDemuxer(source.stream_type, [(source.sequence, source.path)]))
            demuxers[-1].open_first()
            offset = source.offset
            if offset is None:
                offset = source.ended - demuxers[-1].start_seconds()
            demuxers[-1].first_offset = offset
            demuxers[-1].clock_seed, demuxers[-1].clock_moved = source.clock, source.moved
            offsets.append(offset)
        tracks = muxer._track_order(demuxers)  # noqa: SLF001 - the batch muxer's own order, on purpose
        fmt = muxer.output_format_for(track.codec for track in tracks)
        if carried.fmt and fmt != carried.fmt:
            raise Unsupported(f"a stream that began later makes the output {fmt}, not {carried.fmt}")
        known = len(carried.keys)
        numbers = _numbers(carried, [[track.source, *track.key] for track in tracks], joining)
        carried.fmt = fmt
        for track, number in zip(tracks, numbers):
            track.last_dts = carried.last_dts[number - 1]
        feeds = [_Feed(skip, until, len(demuxers) > 1, carried.folded if source.stream_type in joining else None)
                 for source, skip in zip(sources, skips)]
        try:
            with av.open(str(target), mode="w", format=fmt) as output:
                for track in tracks:
                    track.output = muxer._output_stream(output, track, fmt)  # noqa: SLF001
                    track.template = None
                streams = [feed.packets(demuxer) for feed, demuxer in zip(feeds, demuxers)]
                merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda item: item[0])
                _interleave(merged, output, carried, final, {track: n - 1 for track, n in zip(tracks, numbers)})
        except av.FFmpegError as exc:
            raise MediaError(f"could not write a live window: {describe_av_error(exc)}") from exc
        for source, demuxer in zip(sources, demuxers):
            if (demuxer.repairs and source.clock is None) or demuxer.spikes or demuxer.dropped \
                    or demuxer.segment_count != 1 or demuxer.cuts:
                raise Unsupported("the window needed timestamp repairs the batch path makes across the whole stream")
            if source.offset is None and len(demuxer.lane_ends) != len(demuxer.tracks):
                raise Unsupported("a restarted recorder's first window lacks a track: where its media begins is unsure")
        written = sum(track.packets for track in tracks)
        for track, number in zip(tracks, numbers):
            carried.last_dts[number - 1] = track.last_dts
            carried.packets[number - 1] += track.packets
        infos = [replace(muxer._info(track), packets=carried.packets[number - 1])  # noqa: SLF001
                 for track, number in zip(tracks, numbers)]
        ends = [{"/".join(map(str, key)): end for key, end in demuxer.lane_ends.items()} for demuxer in demuxers]
        return Window(infos, [feed.deferred for feed in feeds], numbers, offsets, ends, 0 < known < len(carried.keys),
                      [demuxer.clock_state for demuxer in demuxers], [demuxer.repairs for demuxer in demuxers],
                      written)
    finally:
        for demuxer in demuxers:
            demuxer.close()


@dataclass(frozen=True)
class Window:
    infos: list[muxer.TrackInfo]
    """The batch muxer's facts of each output track, in batch order, packets counted over every window."""
    deferred: list[int | None]
    """Per source, the window position of the first packet left for the next window (None: none)."""
    numbers: list[int]
    """The output's track number of each of the window's tracks (the window numbers them 1, 2, … in batch order)."""
    offsets: list[float]
    """Per source, the seconds its media was moved by (its recorder run's offset)."""
    lane_ends: list[dict[str, float | None]]
    """Per source, each track's end in this window (Lane.end; None: unsure), by "media/codec/rank"."""
    added: bool
    """A joining stream added tracks: the output's Tracks become this window's."""
    clocks: list[dict | None]
    """Per source, its run's clock at the window's end (SegmentClock.snapshot), for the next window."""
    repairs: list[int]
    """Per source, the timeline repairs this window made (batch's timestampRepairs)."""
    written: int = 0
    """Packets this window wrote: none (an MP4 stream's last chunk held only its mfra, say) and there is no window
    file, nothing to append."""


def _numbers(carried: LiveTracks, keys: list[list], joining: frozenset[str]) -> list[int]:
    """The output's track number of each window track; the tracks of a joining stream get the next free ones."""
    first = not carried.keys
    if first:
        carried.keys, carried.last_dts, carried.packets, carried.last_seen = [], [], [], []
    if any(key not in keys for key in carried.keys):
        raise Unsupported("the window's tracks differ from the first window's")
    for key in keys:
        if key in carried.keys:
            continue
        if not first and key[0] not in joining:
            raise Unsupported("the window's tracks differ from the first window's")
        carried.keys.append(key)
        carried.last_dts.append(-math.inf)
        carried.packets.append(0)
        carried.last_seen.append(None)
    return [carried.keys.index(key) + 1 for key in keys]


def _interleave(merged: Iterator, output: av.container.OutputContainer, carried: LiveTracks, final: bool,
                index: dict) -> None:
    """The batch muxer's _interleave, with the start and last dts carried across windows; `index` gives each
    window track's place in `carried`."""
    if carried.start is None:
        merged, start = _first_start(merged, final)
        carried.start = start
    else:
        start = carried.start
    checked: set[int] = set()
    for seconds, track, packet in merged:
        at = index[track]
        if at not in checked:
            checked.add(at)
            last = carried.last_seen[at]
            if last is not None and abs(seconds - last) > LEAP_SECONDS:
                raise Unsupported("a track's time leaps where a window begins: batch repairs it over the whole stream")
        carried.last_seen[at] = seconds
        carried.folded = max(carried.folded, seconds)
        if not muxer.write_shifted(output, track, packet, seconds, start):
            carried.dropped += 1


def _first_start(feed, final: bool):
    """The batch muxer's start; the first window must reach past its look-ahead, or be the whole stream."""
    merged, start = muxer._timeline_start(feed)  # noqa: SLF001
    buffered = []
    for item in merged:
        buffered.append(item)
        if item[0] - buffered[0][0] > muxer.START_LOOKAHEAD_SECONDS:
            break
    else:
        if not final:
            raise ShortWindow("the first window is shorter than the timeline start's look-ahead")
    return itertools.chain(buffered, merged), start
