"""Does Redis keep what it acknowledged across a restart? A 202 means nothing if it does not.

Redis holds the chunk index and the job queue: with `appendonly no` and no RDB `save` rule, a restart
after a chunk was acknowledged forgets the recording. Start-up (web and worker) and `/readyz` ask here;
production refuses such a Redis unless REDIS_ALLOW_NO_PERSISTENCE=true, development only warns.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import redis

from workers.errors import ConfigurationError
from workers.redis_client import for_settings
from workers.settings import Settings


class Persistence(str, enum.Enum):
    """What CONFIG GET says Redis does with its data."""

    PERSISTENT = "persistent"
    NONE = "none"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class PersistenceVerdict:
    """The finding and a sentence an operator can act on."""

    persistence: Persistence
    detail: str

    def refused(self, settings: Settings) -> bool:
        """True when this process must not serve: production, nothing persisted, and no explicit opt-out."""
        return (self.persistence is Persistence.NONE and not settings.development
                and not settings.redis_allow_no_persistence)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _config(client: redis.Redis, name: str) -> str:
    reply = client.config_get(name)
    return _text(next((v for k, v in reply.items() if _text(k) == name), ""))


def check_persistence(client: redis.Redis) -> PersistenceVerdict:
    """Read `appendonly` and `save`; a refused CONFIG (managed Redis, ACL) or an outage is UNVERIFIED."""
    try:
        appendonly, save = _config(client, "appendonly"), _config(client, "save")
    except redis.ResponseError as exc:
        return PersistenceVerdict(Persistence.UNVERIFIED,
                                  f"Redis refused CONFIG GET ({exc}); persistence cannot be verified")
    except redis.RedisError as exc:
        return PersistenceVerdict(Persistence.UNVERIFIED,
                                  f"Redis did not answer ({type(exc).__name__}); persistence not verified yet")
    if appendonly.strip().lower() == "yes":
        return PersistenceVerdict(Persistence.PERSISTENT, "appendonly yes")
    if save.strip():
        return PersistenceVerdict(Persistence.PERSISTENT, f"RDB snapshots (save {save.strip()})")
    return PersistenceVerdict(
        Persistence.NONE,
        "Redis persists nothing (appendonly no, save ''): a restart loses every acknowledged chunk and queued job; "
        "turn on appendonly yes, or set REDIS_ALLOW_NO_PERSISTENCE=true to accept the risk",
    )


STARTUP_TIMEOUT_SECONDS = 3.0
"""Start-up never hangs on an unreachable Redis: it logs that persistence is not verified yet and goes on."""


def verify_at_startup(settings: Settings, log: logging.Logger) -> PersistenceVerdict:
    """The edges' one call (create_app, the Celery worker): its own short-lived client with short timeouts."""
    client = for_settings(settings, socket_connect_timeout=STARTUP_TIMEOUT_SECONDS, socket_timeout=STARTUP_TIMEOUT_SECONDS)
    try:
        return ensure_persistence(client, settings, log)
    finally:
        client.close()


def ensure_persistence(client: redis.Redis, settings: Settings, log: logging.Logger) -> PersistenceVerdict:
    """The start-up check: raises ConfigurationError when refused, logs a warning when it only may be unsafe."""
    verdict = check_persistence(client)
    if verdict.refused(settings):
        raise ConfigurationError(verdict.detail)
    if verdict.persistence is not Persistence.PERSISTENT:
        log.warning("redis persistence: %s", verdict.detail)
    return verdict


__all__ = ["Persistence", "PersistenceVerdict", "check_persistence", "ensure_persistence", "verify_at_startup"]
