"""Per-participant rate limits (flask-limiter on Redis), checked after the token and before anything else."""
from __future__ import annotations

import logging
import math
import time
from functools import wraps
from typing import Callable, TypeVar

from flask import Flask, current_app, g
from flask_limiter import Limiter, RateLimitExceeded

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


def limited(scope: str) -> Callable[[View], View]:
    """Marks a view for the app's `scope` limit; create_app's limiter wraps it (no module-level Limiter to share)."""

    def mark(view: View) -> View:
        setattr(view, SCOPE_ATTRIBUTE, scope)
        return view

    return mark


def _participant_key() -> str:
    """The bucket: the verified token's room and subject (one room has one active recording)."""
    principal = g.rate_principal
    return f"{principal.room}/{principal.sub}"


def build_limiter(app: Flask, settings: Settings) -> Limiter:
    """flask-limiter on the app's Redis, fixed window (one round trip per request, no headers).

    Redis down: the limiter falls back to a per-process in-memory window (logged once, Redis re-probed with
    backoff) so an outage neither 500s nor lifts the limit while clients retry hardest; swallow_errors is the
    last net so a limiter failure never becomes a 500 — the request then fails open into intake, which
    answers 503 unavailable itself when it needs Redis.
    """
    return Limiter(
        _participant_key,
        app=app,
        storage_uri=settings.redis_url,
        storage_options={
            "key_prefix": keys.rate_limits(),
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        },
        strategy="fixed-window",
        headers_enabled=False,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap every view marked with `limited` (call after the blueprints are registered)."""
    limiter = build_limiter(app, settings)
    app.extensions[EXTENSION_KEY] = limiter
    rules = {CHUNKS: limiter.shared_limit(settings.chunk_rate_limit, scope=CHUNKS,
                                          error_message="too many chunk uploads")}
    for endpoint, view in list(app.view_functions.items()):
        scope = getattr(view, SCOPE_ATTRIBUTE, None)
        if scope is not None:
            app.view_functions[endpoint] = _after_token(rules[scope](view))


def _after_token(checked: View) -> View:
    """Authenticate first (401 beats 429, and the bucket is the verified token), then count, then the view."""

    @wraps(checked)
    def view(*args: object, **kwargs: object) -> object:
        g.rate_principal = authenticate()
        try:
            return checked(*args, **kwargs)
        except RateLimitExceeded as exc:
            raise RateLimited(f"{exc.description}: limit is {exc.limit.limit}; retry later",
                              retry_after=_retry_after()) from None

    return view  # type: ignore[return-value]


def _retry_after() -> int:
    """Whole seconds until the breached window resets, from the limiter (1 when it cannot say)."""
    limiter: Limiter = current_app.extensions[EXTENSION_KEY]
    breached = limiter.current_limit
    try:
        reset_at = breached.window[0] if breached else None
    except Exception:  # the limiter's storage failed between the hit and this read
        reset_at = None
    return max(1, math.ceil(reset_at - time.time())) if reset_at else 1
