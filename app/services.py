"""The shared resources one app instance uses, built once in create_app and kept in app.extensions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from flask import current_app

from workers.chunks import ChunkIntake
from workers.resources import Resources
from workers.settings import Settings

EXTENSION_KEY = "tapedeck"
SOCKET_TIMEOUT_SECONDS = 10
"""Above the SSE route's XREAD block time, so a blocked read is never cut short."""


@dataclass(frozen=True)
class Services(Resources):
    intake: ChunkIntake | None = None

    @classmethod
    def build(cls, settings: Settings, env: Mapping[str, str] | None = None, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> "Services":
        base = Resources.build(settings, env, socket_timeout)
        return cls(**base.__dict__, intake=ChunkIntake(base.store, base.staging, settings.max_chunk_bytes,
                                                          settings.max_participants))


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
