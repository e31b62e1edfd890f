"""The app's process resources, built once in create_app and kept in app.extensions."""
from __future__ import annotations

from typing import Mapping

from flask import current_app

from workers.resources import Resources
from workers.settings import Settings

EXTENSION_KEY = "tapedeck"
SOCKET_TIMEOUT_SECONDS = 10
"""Above the SSE route's XREAD block time, so a blocked read is never cut short."""


def build_services(settings: Settings, env: Mapping[str, str] | None = None) -> Resources:
    """The web process's Resources: a Redis socket timeout that suits request handling."""
    return Resources.build(settings, env, SOCKET_TIMEOUT_SECONDS)


def services() -> Resources:
    return current_app.extensions[EXTENSION_KEY]
