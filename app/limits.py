"""Per-participant rate limits on Redis, checked after the token and before anything else."""
from __future__ import annotations

import logging
import math
import time
from functools import wraps
from typing import Callable, TypeVar

from flask import Flask, g
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.auth import authenticate
from workers import keys
from workers.chunk_index import RateCheck, RateWindow
from workers.errors import RateLimited
from workers.settings import Settings

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., object])
T = TypeVar("T")

EXTENSION_KEY = "tapedeck.limiter"
SCOPE_ATTRIBUTE = "_tapedeck_rate_scope"
CHUNKS = "chunks"
"""Scope shared by both chunk routes: JSON and raw uploads count against one bucket per participant."""
STORAGE_TIMEOUT_SECONDS = 1.0
"""A limiter that waits on a stalled Redis would stall every upload; after this the in-memory fallback takes over."""
FALLBACK_SECONDS = 5.0
"""After a storage failure, count in memory this long before trying Redis again."""
BLOCKED_BUCKETS = 10_000
"""Callers one process remembers as over their limit until their window reopens (bounded: expired ones are swept)."""


def limited(scope: str) -> Callable[[View], View]:
    """Marks a view for the app's `scope` limit; create_app's limiter wraps it (no module-level Limiter to share)."""

    def mark(view: View) -> View:
        setattr(view, SCOPE_ATTRIBUTE, scope)
        return view

    return mark


class ChunkLimiter:
    """CHUNK_RATE_LIMIT in Redis: fixed windows, one INCR per request and window, under the keys and with the
    semantics of the `limits` library (flask-limiter's engine).

    A chunk that reaches its commit is counted by the accept script itself, first of its checks: one Redis round
    trip per chunk instead of two (the window's INCR was a third of intake's Redis time). Every other request
    (a bad body, a forbidden or unknown recording, a dependency failing) is counted afterwards through `limits`,
    and answered 429 if over the limit, so the order of DESIGN §4 (token, then rate, then the rest) holds for
    what clients see. Once Redis says a caller is over, this process refuses that caller without Redis or disk
    until the window reopens, so an over-limit client costs at most one staged-then-discarded chunk per window.

    Redis down: a per-process in-memory window takes over for the requests counted afterwards (logged, Redis
    re-probed after a pause) so an outage neither 500s nor lifts the limit while clients retry hardest; intake
    answers 503 unavailable itself when it needs Redis.
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
        self._prefix = f"{keys.rate_limits()}:"
        self._blocked: dict[tuple[str, ...], float] = {}
        self._windows: dict[tuple[str, ...], tuple[RateWindow, ...]] = {}

    def check_for(self, *bucket: str) -> RateCheck:
        """The bucket's windows for the accept script to count; 429 at once while this process knows it is over."""
        until = self._blocked.get(bucket)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                raise self.refusal(math.ceil(left))
            del self._blocked[bucket]
        windows = self._windows.get(bucket)
        if windows is None:  # a bucket's window keys never change: built once, not per chunk
            windows = tuple(RateWindow(self._prefix + item.key_for(*bucket), item.amount, item.get_expiry())
                            for item in self.items)
            if len(self._windows) >= BLOCKED_BUCKETS:
                self._windows.clear()
            self._windows[bucket] = windows
        return RateCheck(windows, self.text)

    def block(self, bucket: tuple[str, ...], seconds: float) -> None:
        """Redis refused this bucket: refuse it here too, without a round trip, for the rest of its window."""
        now = time.monotonic()
        if len(self._blocked) >= BLOCKED_BUCKETS:
            self._blocked = {b: t for b, t in self._blocked.items() if t > now}
            if len(self._blocked) >= BLOCKED_BUCKETS:
                self._blocked.clear()
        self._blocked[bucket] = now + seconds

    def refusal(self, wait: int) -> RateLimited:
        return RateLimited(f"too many uploads: the limit is {self.text} per participant; retry later", retry_after=wait)

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

    def around(self, bucket: tuple[str, ...], work: Callable[[RateCheck], T]) -> T:
        """`work` with the bucket's windows for the accept script to count; a request the script did not count is
        counted here, and its answer becomes 429 when over the limit; a 429 from the script blocks the bucket here."""
        check = self.check_for(*bucket)
        try:
            answer = work(check)
        except RateLimited:
            if check.retry_after_ms is not None:
                self.block(bucket, check.retry_after_ms / 1000)
            raise
        except Exception:
            if not check.counted:
                _count_after(self, bucket)
            raise
        if not check.counted:
            _count_after(self, bucket)
        return answer

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
    has one active recording), then the view with the bucket's windows in `g.rate_check` for the accept script;
    a request the script did not count is counted here, and its answer becomes 429 when over the limit."""

    @wraps(view)
    def checked(*args: object, **kwargs: object) -> object:
        principal = authenticate()
        request_globals = g._get_current_object()  # type: ignore[attr-defined]

        def run(check: RateCheck) -> object:
            request_globals.rate_check = check
            return view(*args, **kwargs)

        return limiter.around((principal.room, principal.sub, scope), run)

    return checked  # type: ignore[return-value]


def _count_after(limiter: ChunkLimiter, bucket: tuple[str, ...]) -> None:
    """Count a request that ended before the accept script; over the limit, its answer is 429 instead."""
    wait = limiter.retry_after(*bucket)
    if wait is not None:
        raise limiter.refusal(wait) from None
