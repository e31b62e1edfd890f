"""Client clocks: what can be a time, how it is read, and how it is shown. Nothing here can raise on a
number that passed the edge, and nothing here trusts that it did (one participant's clock fails no one)."""
from __future__ import annotations

import math
from datetime import datetime, timezone

LATEST_TIMESTAMP_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z in epoch milliseconds: a later client timestamp cannot be a time (400)."""

SECONDS_BELOW = 100_000_000_000
"""Timestamps under 10^11 are read as epoch seconds (10^11 ms is 1973; 10^11 s is the year 5138): some clients
send seconds, as the product brief's own example does."""


def is_client_time(value: float) -> bool:
    """A value that can be a client's epoch-milliseconds timestamp: finite, not negative, not after 2100."""
    return math.isfinite(value) and 0 <= value <= LATEST_TIMESTAMP_MS


def normalize_ms(value: float | None) -> float | None:
    """A stored client timestamp as epoch milliseconds (seconds scaled up), or None when it cannot be a time."""
    if value is None or not is_client_time(value):
        return None
    return value * 1000.0 if value < SECONDS_BELOW else value


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC, the only time format clients see; None for what no calendar holds."""
    if ts is None or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def epoch(raw: str | None) -> float | None:
    """A stored epoch-seconds field (Redis strings) as a float; None when empty or unreadable."""
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
