"""Per-participant rate limits on Redis, checked after the token and before anything else."""
from __future__ import annotations

import logging
import math
import time
from functools import wraps
from typing import Callable, TypeVar

from flask import Flask
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.auth import authenticate
from workers import keys
from workers.errors import RateLimited
from workers.settings import Settings

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., object])

EXTENSION_KEY = "tapedeck.limiter"
SCOPE_ATTRIBUTE = "_tapedeck_rate_scope"
CHUNKS = "chunks"
"""Scope shared by both chunk routes: JSON and raw uploads count against one bucket per participant."""
STORAGE_TIMEOUT_SECONDS = 1.0
"""A limiter that waits on a stalled Redis would stall every upload; after this the in-memory fallback takes over."""
FALLBACK_SECONDS = 5.0
"""After a storage failure, count in memory this long before trying Redis again."""


def limited(scope: str) -> Callable[[View], View]:
    """Marks a view for the app's `scope` limit; create_app's limiter wraps it (no module-level Limiter to share)."""

    def mark(view: View) -> View:
        setattr(view, SCOPE_ATTRIBUTE, scope)
        return view

    return mark


class ChunkLimiter:
    """CHUNK_RATE_LIMIT counted in Redis with the `limits` library (flask-limiter's engine), one fixed-window
    INCR per request. flask-limiter's own request hooks evaluated every limit twice per request (its
    middleware and its decorator) at ~0.6 ms; intake is the hot path, so the view calls the engine once.

    Redis down: a per-process in-memory window takes over (logged, Redis re-probed after a pause) so an
    outage neither 500s nor lifts the limit while clients retry hardest; the request then reaches intake,
    which answers 503 unavailable itself when it needs Redis.
    """

    def __init__(self, settings: Settings) -> None:
        self.text = settings.chunk_rate_limit
        self.items = parse_many(settings.chunk_rate_limit)
        storage = storage_from_string(settings.redis_url, key_prefix=keys.rate_limits(),
                                      socket_timeout=STORAGE_TIMEOUT_SECONDS,
                                      socket_connect_timeout=STORAGE_TIMEOUT_SECONDS)
        self._shared = FixedWindowRateLimiter(storage)
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._local_until = 0.0

    def retry_after(self, *bucket: str) -> int | None:
        """Count one request against the bucket; None when allowed, else whole seconds until it reopens."""
        if time.monotonic() >= self._local_until:
            try:
                return self._count(self._shared, bucket)
            except Exception as exc:  # noqa: BLE001 - any storage failure: count locally instead
                log.warning("Rate limit storage unreachable - falling back to in-memory storage (%s)",
                            type(exc).__name__)
                self._local_until = time.monotonic() + FALLBACK_SECONDS
        return self._count(self._local, bucket)

    def _count(self, limiter: FixedWindowRateLimiter, bucket: tuple[str, ...]) -> int | None:
        for item in self.items:
            if not limiter.hit(item, *bucket):
                reset_at = limiter.get_window_stats(item, *bucket).reset_time
                return max(1, math.ceil(reset_at - time.time()))
        return None


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap every view marked with `limited` (call after the blueprints are registered)."""
    limiter = ChunkLimiter(settings)
    app.extensions[EXTENSION_KEY] = limiter
    for endpoint, view in list(app.view_functions.items()):
        scope = getattr(view, SCOPE_ATTRIBUTE, None)
        if scope is not None:
            app.view_functions[endpoint] = _after_token(view, limiter, scope)


def _after_token(view: View, limiter: ChunkLimiter, scope: str) -> View:
    """Authenticate first (401 beats 429, and the bucket is the verified token: room and subject — one room
    has one active recording), then count, then the view."""

    @wraps(view)
    def checked(*args: object, **kwargs: object) -> object:
        principal = authenticate()
        wait = limiter.retry_after(principal.room, principal.sub, scope)
        if wait is not None:
            raise RateLimited(f"too many uploads: the limit is {limiter.text} per participant; retry later",
                              retry_after=wait)
        return view(*args, **kwargs)

    return checked  # type: ignore[return-value]
