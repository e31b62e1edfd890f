"""One typed settings object, parsed once from the environment, shared by app, tasks and workers."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, TypeVar

from workers.media.convert import Mp4Settings
from workers.errors import ConfigurationError

DEV_JWT_SECRET = "tapedeck-development-secret-do-not-use-in-production"
"""Used only when TAPEDECK_ENV=development and JWT_SECRET is unset."""

OUTPUT_FORMATS = ("webm", "mp4")
STREAM_HOSTS_ALLOWANCE = 16
"""Event streams allowed per recording beyond MAX_PARTICIPANTS by default: its hosts and dashboards."""
Number = TypeVar("Number", int, float)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _number(env: Mapping[str, str], name: str, default: Number, minimum: Number = 0, cast: type = int) -> Number:
    """A numeric variable; unset or empty means the default, anything unparsable or too small fails naming it."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {'an integer' if cast is int else 'a number'}, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); a typo fails start-up rather than widening access."""
    try:
        return tuple(ipaddress.ip_network(part) for part in _csv(env, name))
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be comma-separated CIDRs such as 10.0.0.0/8: {exc}") from None


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A flask-limiter rate string ("50/second", "50/second;2000/minute"), checked here so a typo fails start-up."""
    from limits import parse_many

    raw = env.get(name, "").strip() or default
    try:
        rates = parse_many(raw)
    except ValueError:
        rates = []
    if not rates or any(rate.amount < 1 for rate in rates):
        raise ConfigurationError(f"{name} must be a rate such as 50/second, got {raw!r}")
    return raw


def _check_sentinels(env: Mapping[str, str]) -> None:
    """REDIS_SENTINELS must be host:port pairs and name the master to follow."""
    from workers.redis_client import parse_sentinels

    try:
        sentinels = parse_sentinels(env.get("REDIS_SENTINELS", ""))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if sentinels and not env.get("REDIS_SENTINEL_MASTER", "").strip():
        raise ConfigurationError("REDIS_SENTINEL_MASTER is required with REDIS_SENTINELS")


@dataclass(frozen=True)
class Settings:
    """Everything tapedeck reads from the environment (storage backends parse their own)."""

    env: str = "production"
    port: int = 8000
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinels: str = ""
    """host:port,... of Redis Sentinels; set, every client follows REDIS_SENTINEL_MASTER through failovers."""
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    jwt_secret: str = ""
    staging_dir: Path = Path("./var/staging")
    storage_provider: str = "local"
    recording_format: str = "webm"
    finalize_grace_seconds: float = 5.0
    max_chunk_bytes: int = 8 * 1024 * 1024
    max_participants: int = 100
    staging_min_free_bytes: int = 256 * 1024 * 1024
    staging_retention_seconds: int = 7 * 24 * 3600
    retention_days: float | None = None
    """Completed and failed recordings older than this are deleted by beat; None keeps them forever."""
    finalize_lock_seconds: int = 60
    upload_max_retries: int = 5
    upload_retry_base_seconds: float = 1.0
    public_base_url: str = "http://localhost:8000"
    download_url_ttl_seconds: int = 7 * 24 * 3600
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    event_stream_maxlen: int = 1000
    max_event_streams_per_recording: int = 100 + STREAM_HOSTS_ALLOWANCE
    max_event_streams_per_token: int = 4
    chunk_rate_limit: str = "50/second"
    control_allowed_ips: tuple[Network, ...] = field(default_factory=tuple)
    trusted_proxies: tuple[Network, ...] = field(default_factory=tuple)
    thumbnail_offset_seconds: float = 1.0
    thumbnail_width: int = 640
    mp4: Mp4Settings = field(default_factory=Mp4Settings)
    redis_allow_no_persistence: bool = False
    worker_metrics_port: int = 9191
    log_format: str = "json"
    webhook_url: str | None = None
    """Where recording events are POSTed (the only URL webhooks ever go to); None sends nothing."""
    webhook_secret: str = ""
    webhook_give_up_seconds: int = 24 * 3600
    webhook_timeout_seconds: float = 10.0

    @property
    def development(self) -> bool:
        return self.env == "development"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        mode = env.get("TAPEDECK_ENV", "production").strip() or "production"
        if mode not in ("production", "development"):
            raise ConfigurationError(f"TAPEDECK_ENV must be production or development, got {mode!r}")
        secret = env.get("JWT_SECRET", "")
        if not secret:
            if mode != "development":
                raise ConfigurationError("JWT_SECRET is required unless TAPEDECK_ENV=development")
            secret = DEV_JWT_SECRET
        fmt = env.get("RECORDING_FORMAT", "webm").strip() or "webm"
        if fmt not in OUTPUT_FORMATS:
            raise ConfigurationError(f"RECORDING_FORMAT must be one of {OUTPUT_FORMATS}, got {fmt!r}")
        port = _int(env, "PORT", 8000, 1)
        _check_sentinels(env)
        from storage_providers.registry import detect_provider_name

        return cls(
            env=mode,
            port=port,
            redis_url=env.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0",
            redis_sentinels=env.get("REDIS_SENTINELS", "").strip(),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip(),
            redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD", ""),
            jwt_secret=secret,
            staging_dir=Path(env.get("STAGING_DIR", "").strip() or "./var/staging").resolve(),
            storage_provider=detect_provider_name(env),
            recording_format=fmt,
            finalize_grace_seconds=_float(env, "FINALIZE_GRACE_SECONDS", 5.0),
            max_chunk_bytes=_int(env, "MAX_CHUNK_BYTES", 8 * 1024 * 1024, 1),
            max_participants=_int(env, "MAX_PARTICIPANTS", 100, 1),
            staging_min_free_bytes=_int(env, "STAGING_MIN_FREE_BYTES", 256 * 1024 * 1024, 0),
            staging_retention_seconds=_int(env, "STAGING_RETENTION_SECONDS", 7 * 24 * 3600, 0),
            retention_days=_float(env, "RETENTION_DAYS", 0.0) if env.get("RETENTION_DAYS", "").strip() else None,
            finalize_lock_seconds=_int(env, "FINALIZE_LOCK_SECONDS", 60, 5),
            upload_max_retries=_int(env, "UPLOAD_MAX_RETRIES", 5, 0),
            upload_retry_base_seconds=_float(env, "UPLOAD_RETRY_BASE_SECONDS", 1.0),
            public_base_url=(env.get("PUBLIC_BASE_URL", "").strip() or "http://localhost:8000").rstrip("/"),
            download_url_ttl_seconds=_int(env, "DOWNLOAD_URL_TTL_SECONDS", 7 * 24 * 3600, 1),
            cors_origins=_csv(env, "CORS_ORIGINS"),
            max_event_streams_per_recording=_int(env, "MAX_EVENT_STREAMS_PER_RECORDING",
                                                 _int(env, "MAX_PARTICIPANTS", 100, 1) + STREAM_HOSTS_ALLOWANCE, 1),
            max_event_streams_per_token=_int(env, "MAX_EVENT_STREAMS_PER_TOKEN", 4, 1),
            chunk_rate_limit=_rate(env, "CHUNK_RATE_LIMIT", "50/second"),
            control_allowed_ips=_networks(env, "CONTROL_ALLOWED_IPS"),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
            thumbnail_offset_seconds=_float(env, "THUMBNAIL_OFFSET_SECONDS", 1.0),
            thumbnail_width=_int(env, "THUMBNAIL_WIDTH", 640, 0),
            mp4=Mp4Settings(
                video_codec=env.get("MP4_VIDEO_CODEC", "").strip() or "libx264",
                video_preset=env.get("MP4_VIDEO_PRESET", "").strip() or "veryfast",
                video_crf=_int(env, "MP4_VIDEO_CRF", 23, 0),
                audio_codec=env.get("MP4_AUDIO_CODEC", "").strip() or "aac",
                audio_bit_rate=_int(env, "MP4_AUDIO_BITRATE", 128_000, 8_000),
            ),
            redis_allow_no_persistence=env.get("REDIS_ALLOW_NO_PERSISTENCE", "").strip().lower() in ("1", "true", "yes"),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 9191, 0),
            log_format=_log_format(env, mode),
            webhook_url=env.get("WEBHOOK_URL", "").strip() or None,
            webhook_secret=env.get("WEBHOOK_SECRET", ""),
            webhook_give_up_seconds=_int(env, "WEBHOOK_GIVE_UP_SECONDS", 24 * 3600, 60),
            webhook_timeout_seconds=_float(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.5),
        )


def _log_format(env: Mapping[str, str], mode: str) -> str:
    """LOG_FORMAT: json or text; unset means json in production, text in development."""
    value = env.get("LOG_FORMAT", "").strip().lower() or ("text" if mode == "development" else "json")
    if value not in ("json", "text"):
        raise ConfigurationError(f"LOG_FORMAT must be json or text, got {value!r}")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use (never at import time)."""
    return Settings.from_env()
