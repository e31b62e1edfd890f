"""CORS for browser clients on other origins (CORS_ORIGINS); off when unset."""
from __future__ import annotations

from flask import Flask
from flask_cors import CORS

ALLOWED_HEADERS = ["Authorization", "Content-Type", "Tapedeck-Timestamp", "Tapedeck-Final", "Repr-Digest", "Content-Digest",
                   "Last-Event-ID"]


def init_app(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    CORS(
        app,
        resources={r"/video-calls/*": {"origins": list(origins)}, r"/files/*": {"origins": list(origins)}},
        allow_headers=ALLOWED_HEADERS,
        expose_headers=["Retry-After"],
        max_age=600,
    )
