"""The thin HTTP edge: create_app builds the Flask app; routes validate, authorize and hand off to workers/tasks."""
from __future__ import annotations

import logging
import os
from typing import Mapping

from flask import Flask

from app.services import EXTENSION_KEY, build_services
from workers import logs
from workers.redis_persistence import verify_at_startup
from workers.settings import Settings

CHUNK_BODY_OVERHEAD = 64 * 1024
"""JSON framing around a base64 chunk, allowed on top of MAX_CHUNK_BYTES * 4/3."""


class TapedeckFlask(Flask):
    """Flask with its `ensure_sync` answer remembered per function: Flask asks `iscoroutinefunction` of every hook and
    view on every request (seven times per chunk upload), and the answer never changes for a function. Bounded: a
    function made per request (none here today) would only be looked at afresh once the memo is full."""

    SYNC_MEMO = 1024

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._sync_memo: dict = {}

    def ensure_sync(self, func):  # type: ignore[no-untyped-def, override]
        memo = self._sync_memo
        try:
            return memo[func]
        except KeyError:
            made = super().ensure_sync(func)
            if len(memo) < self.SYNC_MEMO:
                memo[func] = made
            return made
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment; test_config overrides environment variables by name."""
    env = {**os.environ, **(test_config or {})}
    settings = Settings.from_env(env)
    app = TapedeckFlask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_chunk_bytes * 4 // 3 + CHUNK_BODY_OVERHEAD
    app.json.sort_keys = False
    app.extensions[EXTENSION_KEY] = build_services(settings, env)
    logs.configure(settings.log_format, logging.DEBUG if settings.development else logging.INFO)
    logging.getLogger("redis").setLevel(logging.WARNING)
    verify_at_startup(settings, logging.getLogger("tapedeck.startup"))  # production refuses a Redis that persists nothing

    from app import cli, cors, errors, openapi
    from app.routes import chunks, demo, events, files, health, lifecycle, recordings, signal

    errors.init_app(app)
    cors.init_app(app, settings.cors_origins)
    for module in (recordings, chunks, lifecycle, events, health, files, demo, openapi, signal):
        app.register_blueprint(module.bp)
    cli.init_app(app)
    from app import metrics

    metrics.init_app(app)
    from app import observability

    observability.init_app(app)
    from app import limits

    limits.init_app(app, settings)  # after the blueprints: it wraps the views they marked
    from app.chunk_lane import ChunkLane

    app.wsgi_app = ChunkLane(app, app.wsgi_app)  # type: ignore[method-assign] - the raw chunk PUT outside Flask
    return app
