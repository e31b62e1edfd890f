"""The load generator of bench/load_bench.py: one thread per participant, each on its own keep-alive
http.client connection, PUTting chunks back to back (closed loop) for a fixed time."""
from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

RETRIED = frozenset({429, 503, "conn"})
"""Answers a client retries with the same sequence (like the browser module); any other moves on."""
BODY_VARIANTS = 8
"""Distinct random bodies rotated across sequences (the server hashes every one anyway)."""


@dataclass
class Tally:
    """What one participant's thread saw inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    """Seconds per request, every answer (success or error)."""
    statuses: Counter = field(default_factory=Counter)
    """Answer status → count; 'conn' for a connection error."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    recording_id: str
    headers_for: Callable[[str], dict[str, str]]
    """Participant id → request headers (its token)."""


def make_bodies(header_chunk: bytes, size: int) -> tuple[bytes, list[bytes]]:
    """Sequence 0 (a real WebM header, padded) and the bodies of the later sequences, each `size` bytes."""
    first = header_chunk[:size] + os.urandom(max(0, size - len(header_chunk)))
    return first, [os.urandom(size) for _ in range(BODY_VARIANTS)]


def _participant(target: Target, participant: str, first: bytes, bodies: list[bytes],
                 measure_from: float, stop_at: float, tally: Tally) -> None:
    """PUT sequences 0, 1, 2, … until stop_at; answers after measure_from count."""
    base = {**target.headers_for(participant), "Content-Type": "application/octet-stream"}
    path = f"/video-calls/recordings/{target.recording_id}/participants/{participant}/video/chunks/"
    conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
    sequence = 0
    while (started := time.perf_counter()) < stop_at:
        body = first if sequence == 0 else bodies[sequence % len(bodies)]
        try:
            conn.request("PUT", f"{path}{sequence}", body=body, headers=base)
            response = conn.getresponse()
            response.read()
            status: int | str = response.status
            retry_after = response.getheader("Retry-After")
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
            status, retry_after = "conn", None
        if started >= measure_from:
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] += 1
        if status not in RETRIED:
            sequence += 1
        if retry_after:
            time.sleep(min(float(retry_after), 1.0))
    conn.close()


def drive(target: Target, participants: list[str], first: bytes, bodies: list[bytes],
          warmup: float, seconds: float) -> list[Tally]:
    """Run every participant at once; the window is [start + warmup, start + warmup + seconds)."""
    now = time.perf_counter()
    measure_from, stop_at = now + warmup, now + warmup + seconds
    tallies = [Tally() for _ in participants]
    threads = [threading.Thread(target=_participant, name=f"load-{p}",
                                args=(target, p, first, bodies, measure_from, stop_at, tally))
               for p, tally in zip(participants, tallies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies
