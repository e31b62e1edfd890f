"""One segment's timestamps made playable, track by track: a lone corrupt timecode is dropped, a pause
(every track jumps ahead with no media lost) is collapsed, and a restart (timestamps back near zero without
a new header, a reconnect) continues where the segment was — while a hole left by missing chunks stays a
hole, so what a player shows at second N is still what was recorded at second N."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av

from workers.media.track import Track

LEAP_SECONDS = 1.0
"""A packet this far ahead of or behind its track's previous one is held until the next packet shows whether
the track really jumped (a hole, a pause, a restart) or just that one timecode was corrupt. Larger than any
frame or audio packet interval; smaller backward steps are clamped or dropped by the muxer."""

PAUSE_MIN_SECONDS = 2.0
"""A forward jump is collapsed only above this. Shorter ones stay as they are: a stall or a lost second
of media is not worth moving a track for, and a paused client is paused for longer than that."""

PAUSE_MIN_TRACKS = 2
"""A pause is told from a long still picture (a video-only screen share sends no frames while nothing moves)
only by a second track that jumps too, so a segment with fewer tracks keeps its forward jumps."""

HOLE_SLACK = 3.0
"""A forward jump is collapsed only when it is this many times longer than the media that the bytes lost
around it (missing chunks, data the demuxer skipped) could have held at the segment's own bitrate. The
estimate is rough (keyframes, variable bitrate), so the margin keeps a real hole from passing for a pause."""


class Spans(Protocol):
    """What a segment's read positions mean in recorded bytes (ChunkStream, or the fMP4 fragment view)."""

    def lost_bytes(self, start: int, end: int) -> tuple[float, float]:
        """(bytes recorded between the positions, the share of it in missing chunks), both estimates."""
        ...


@dataclass(frozen=True)
class Epoch:
    """A confirmed jump of the segment's clock: a track whose time is nearer `after` than `before` moves by `delta`."""

    before: float
    after: float
    delta: float


class SegmentClock:
    """The jumps all tracks of one segment share, so a pause or restart shifts every track alike (lip-sync)."""

    def __init__(self, spans: Spans) -> None:
        self.spans = spans
        self.epochs: list[Epoch] = []
        self.lanes: list[Lane] = []
        self.repairs = 0
        """Pauses collapsed plus restarts joined."""

    def lane(self, track: Track, time_base: Fraction, offset: float) -> Lane:
        """A lane for one input stream of the segment, shifted by `offset` seconds."""
        lane = Lane(self, track, time_base, offset)
        self.lanes.append(lane)
        return lane

    def jumped(self, lane: Lane, seconds: float, pos: int | None) -> None:
        """A lane's confirmed jump to `seconds`: open an epoch when it is a restart or a pause, not a hole."""
        jump = seconds - lane.last_seconds - lane.step  # type: ignore[operator]
        if jump < 0:
            self._open(lane, seconds, -jump)  # a restart: go on where the track was
            return
        keep = self._pause_hole(lane, seconds, jump, pos)
        if keep is not None:
            self._open(lane, seconds, keep - jump)

    def _pause_hole(self, lane: Lane, seconds: float, jump: float, pos: int | None) -> float | None:
        """Seconds of a forward jump to keep (the missing chunks' estimated media) when it is a pause, else None."""
        if jump <= PAUSE_MIN_SECONDS or len(self.lanes) < PAUSE_MIN_TRACKS or self._covered(lane):
            return None
        rate = lane.seconds_per_byte()
        if rate is None or lane.last_pos is None or pos is None:
            return None  # too early or positions unknown: cannot tell a pause from a hole, so keep it
        lost, missing = self.spans.lost_bytes(lane.last_pos, pos)
        if jump <= HOLE_SLACK * rate * lost:
            return None
        return min(jump, rate * missing)

    def _covered(self, lane: Lane) -> bool:
        """True when another track already has media past the jump's start: it did not pause, so neither did we
        (demuxers interleave tracks by time, so a track that paused too has not got past it yet)."""
        limit = lane.last_seconds + LEAP_SECONDS  # type: ignore[operator]
        return any(other is not lane and other.epoch == lane.epoch and other.last_seconds is not None
                   and other.last_seconds > limit for other in self.lanes)

    def _open(self, lane: Lane, seconds: float, delta: float) -> None:
        self.epochs.append(Epoch(before=lane.last_seconds, after=seconds, delta=delta))  # type: ignore[arg-type]
        self.repairs += 1

    def snapshot(self, lanes: dict[str, Lane], moved: int) -> dict:
        """The clock as JSON, byte positions moved by `moved`: a live window hands it to the next window of the
        same recorder run, so its lanes go on exactly as one demuxer reading the whole run would."""
        return {"epochs": [[e.before, e.after, e.delta] for e in self.epochs],
                "lanes": {key: lane.snapshot(moved) for key, lane in lanes.items()}}

    def restore(self, data: dict, lanes: dict[str, Lane], moved: int) -> None:
        """Take up a snapshot (its positions moved by `moved`) before any packet of this segment is read."""
        self.epochs = [Epoch(*epoch) for epoch in data["epochs"]]
        for key, lane in lanes.items():
            if key in data["lanes"]:
                lane.restore(data["lanes"][key], moved)


class Lane:
    """Per input stream of one segment: its track, its time shift, where its media ends so far, and a packet
    held back while its leap is unconfirmed (a corrupt timecode would otherwise drag the track along)."""

    __slots__ = ("clock", "track", "shift", "time_base", "seconds_per_tick", "epoch", "last_seconds", "last_pts",
                 "last_pos", "first_seconds", "first_pos", "gap", "step", "held", "spikes")

    def __init__(self, clock: SegmentClock, track: Track, time_base: Fraction, offset: float) -> None:
        self.clock, self.track = clock, track
        self.shift = round(offset / time_base)
        """Ticks added to every timestamp: the segment's offset plus the epochs this lane has entered."""
        self.time_base = time_base
        self.seconds_per_tick = float(time_base)
        self.epoch = 0
        """How many of the clock's epochs this lane has entered."""
        self.last_seconds: float | None = None
        self.last_pts: int | None = None
        self.last_pos: int | None = None
        self.first_seconds: float | None = None
        self.first_pos: int | None = None
        self.gap = 0
        self.step = 0.0
        """Seconds between the last two packets' dts: where the next one is due (packet durations can include a
        pause: a muxer may stretch the last sample before it)."""
        self.held: tuple[int, int, av.Packet] | None = None
        self.spikes = 0

    def admit(self, pts: int, dts: int, packet: av.Packet) -> list[tuple[float, av.Packet]]:
        """Packets ready to mux, given one with its unshifted timestamps; a leap is held until the next packet."""
        ready = []
        if self.held is not None:
            held, self.held = self.held, None
            self._enter(held[1])
            if self._continues(held, dts):
                ready.append((self.take(*held), held[2]))
            else:
                self.spikes += 1
        self._enter(dts)
        if self.last_seconds is not None and abs(self.seconds(dts) - self.last_seconds) > LEAP_SECONDS:
            self.held = (pts, dts, packet)
        else:
            ready.append((self.take(pts, dts, packet), packet))
        if self.first_seconds is None:
            self.first_seconds, self.first_pos = self.last_seconds, self.last_pos
        return ready

    def take(self, pts: int, dts: int, packet: av.Packet) -> float:
        """Shift a packet onto the output timeline and record it as passed on; returns its dts in seconds."""
        pts, dts = pts + self.shift, dts + self.shift
        packet.pts, packet.dts = pts, dts
        duration = packet.duration
        if duration and duration * self.seconds_per_tick > LEAP_SECONDS:
            packet.duration = duration = 0  # stretched over a pause by the client's muxer: would outlast a collapse
        self.gap = duration or (pts - self.last_pts if self.last_pts is not None else 0)
        seconds = dts * self.seconds_per_tick
        if self.last_seconds is not None:
            self.step = seconds - self.last_seconds
        self.last_seconds, self.last_pts, self.last_pos = seconds, pts, packet.pos
        return seconds

    def seconds(self, dts: int) -> float:
        return (dts + self.shift) * self.seconds_per_tick

    def snapshot(self, moved: int) -> list:
        """What the lane carries from one packet to the next (positions moved by `moved`); never a held packet."""
        return [self.shift, self.epoch, self.last_seconds, self.last_pts, _moved(self.last_pos, moved),
                self.first_seconds, _moved(self.first_pos, moved), self.gap, self.step]

    def restore(self, data: list, moved: int) -> None:
        (self.shift, self.epoch, self.last_seconds, self.last_pts, last_pos, self.first_seconds, first_pos, self.gap,
         self.step) = data
        self.last_pos, self.first_pos = _moved(last_pos, moved), _moved(first_pos, moved)

    def finish(self) -> int:
        """Spikes dropped; a leap in the very last packet cannot be confirmed, so it is dropped too."""
        if self.held is not None:
            self.held = None
            self.spikes += 1
        return self.spikes

    def end(self) -> float:
        """Last pts plus its duration; browsers often leave duration 0, so then the last frame gap."""
        if self.last_pts is None:
            return 0.0
        return (self.last_pts + max(0, self.gap)) * self.seconds_per_tick

    def seconds_per_byte(self) -> float | None:
        """The segment's media time per recorded byte so far, from this lane's first and last packet."""
        if self.first_pos is None or self.last_pos is None or self.last_pos <= self.first_pos:
            return None
        span = self.last_seconds - self.first_seconds  # type: ignore[operator]
        recorded, _ = self.clock.spans.lost_bytes(self.first_pos, self.last_pos)
        return span / recorded if span > 0 and recorded > 0 else None

    def _continues(self, held: tuple[int, int, av.Packet], next_dts: int) -> bool:
        """True when a held packet belongs on the track: it fits now, or the next packet follows it rather than
        the track's previous one (a real jump, handed to the clock); False for a lone corrupt timecode."""
        held_seconds, last = self.seconds(held[1]), self.last_seconds
        if last is None or abs(held_seconds - last) <= LEAP_SECONDS:
            return True
        following = self.seconds(next_dts)
        if abs(following - held_seconds) >= abs(following - last):
            return False
        self.clock.jumped(self, held_seconds, held[2].pos)
        self._enter(held[1])
        return True

    def _enter(self, dts: int) -> None:
        """Move into every epoch this timestamp lies past (nearer its `after` than its `before`)."""
        epochs = self.clock.epochs
        while self.epoch < len(epochs):
            epoch, seconds = epochs[self.epoch], self.seconds(dts)
            if abs(seconds - epoch.after) >= abs(seconds - epoch.before):
                return
            self.epoch += 1
            self.shift += round(epoch.delta / self.time_base)


def _moved(pos: int | None, by: int) -> int | None:
    return None if pos is None else pos + by
