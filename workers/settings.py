"""One typed settings object, parsed once from the environment with pydantic-settings, shared by app, tasks and
workers. Each field is its variable (PORT is `port`); its default is written once, here; a bad value fails start-up
with a ConfigurationError naming the variable. Storage backends parse their own variables (storage_providers/)."""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from storage_providers.env_settings import EnvSettings
from workers.errors import ConfigurationError
from workers.media.encoding import Mp4Settings
from workers.webrtc.config import RtcSettings

DEV_JWT_SECRET = "tapedeck-development-secret-do-not-use-in-production"
"""Used only when TAPEDECK_ENV=development and JWT_SECRET is unset."""

OUTPUT_FORMATS = ("webm", "mp4")
STREAM_HOSTS_ALLOWANCE = 16
"""Event streams allowed per recording beyond MAX_PARTICIPANTS by default: its hosts and dashboards."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""REDIS_URL when unset (scripts/ and `make run` start a local Redis there when none answers)."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Csv = Annotated[tuple[str, ...], NoDecode]
"""A comma-separated variable (NoDecode: pydantic-settings would otherwise expect JSON for a tuple)."""
Networks = Annotated[tuple[Network, ...], NoDecode]
Port = Annotated[int, Field(ge=1, le=65535)]


def _split(value: Any) -> Any:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


class RedisSettings(EnvSettings):
    """Where Redis is (REDIS_URL, or a master followed through REDIS_SENTINELS): shared with celeryconfig.py."""

    config_error: ClassVar[type[Exception]] = ConfigurationError
    raw_variables: ClassVar[frozenset[str]] = frozenset({"REDIS_SENTINEL_PASSWORD", "JWT_SECRET", "WEBHOOK_SECRET"})

    redis_url: str = DEFAULT_REDIS_URL
    redis_sentinels: str = ""
    """host:port,... of Redis Sentinels; set, every client follows REDIS_SENTINEL_MASTER through failovers."""
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = Field("", repr=False)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_pairs(cls, value: str) -> str:
        from workers.redis_client import parse_sentinels

        parse_sentinels(value)  # ValueError naming the bad entry
        return value

    @model_validator(mode="after")
    def _sentinel_master(self) -> "RedisSettings":
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER is required with REDIS_SENTINELS")
        return self


class Settings(RedisSettings):
    """Everything tapedeck reads from the environment (storage backends parse their own)."""

    env: Literal["production", "development"] = Field("production", validation_alias="TAPEDECK_ENV")
    port: Port = 8000
    jwt_secret: str = Field("", repr=False)
    """Required in production; development falls back to DEV_JWT_SECRET."""
    staging_dir: Path = Field(Path("./var/staging"), validate_default=True)
    storage_provider: str = "local"
    """STORAGE_PROVIDER, or the backend guessed from which credentials are set (storage_providers/registry.py)."""
    recording_format: Literal[OUTPUT_FORMATS] = "webm"  # type: ignore[valid-type]
    finalize_grace_seconds: float = Field(5.0, ge=0, le=3600, allow_inf_nan=False)
    max_chunk_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_participants: int = Field(100, ge=1)
    staging_min_free_bytes: int = Field(256 * 1024 * 1024, ge=0)
    staging_retention_seconds: int = Field(7 * 24 * 3600, ge=0)
    staging_backend: Literal["local", "object-store"] = "local"
    """Where accepted chunks wait for finalize: local (STAGING_DIR) or object-store (the storage provider's bucket,
    under staging/, so any worker finalizes any recording; STAGING_DIR is then the worker's scratch disk)."""
    retention_days: Annotated[float, Field(gt=0, le=36500, allow_inf_nan=False)] | None = None
    """Completed and failed recordings older than this are deleted by beat; None keeps them forever. 0 is refused
    rather than read: elsewhere 0 means "never" (MAX_RECORDING_SECONDS), here it would mean "delete at once"."""
    max_recording_seconds: int = Field(4 * 3600, ge=0)
    """Beat stops a recording that recorded this long (paused time not counted); 0 never."""
    idle_stop_seconds: int = Field(300, ge=0)
    """Beat stops a recording that received no chunk for this long (paused time not counted); 0 never."""
    compact_after_seconds: int = Field(7 * 24 * 3600, ge=60, validation_alias="REDIS_COMPACT_AFTER_SECONDS")
    """Completed recordings ended longer ago than this keep only a compact summary in Redis."""
    orphan_upload_min_age_seconds: int = Field(3600, ge=0)
    """An incomplete S3 multipart upload is aborted only when its recording is final or gone AND it is this old."""
    finalize_lock_seconds: int = Field(60, ge=5)
    live_finalize: bool = True
    """LIVE_FINALIZE: remux each participant's stream while the room records, so stop leaves only the tail. On by
    default: intake queues a step only while some worker announces that it consumes `live` (workers/live/consumers.py),
    so a deployment without such a worker takes the batch path as it would with this off."""
    live_consumer_refresh_seconds: float = Field(10.0, ge=0.5, le=300, allow_inf_nan=False)
    """How often a worker consuming `live` renews its announcement; it lapses after three missed renewals."""
    live_step_seconds: float = Field(10.0, ge=1, le=600)
    """At most one live step per recording this often: each folds in every chunk that arrived meanwhile."""
    live_transcode_step_seconds: float = Field(2.0, ge=1, le=600)
    """LIVE_STEP_SECONDS for a recording whose output is transcoded (`format: mp4`): what a step has not folded at
    stop is transcoded after it (about 0.75 s of CPU per second of 720p), so these steps run more often. A window
    starts a fresh encoder on a keyframe, which at the batch encoder's keyframe every 2 s costs little in size."""
    upload_max_retries: int = Field(5, ge=0)
    upload_retry_base_seconds: float = Field(1.0, ge=0, le=300, allow_inf_nan=False)
    download_url_ttl_seconds: int = Field(7 * 24 * 3600, ge=1)
    cors_origins: Csv = ()
    event_stream_maxlen: ClassVar[int] = 1000
    """Events kept per recording stream (XADD MAXLEN ~): a constant, not a variable."""
    max_event_streams_per_recording: int = Field(100 + STREAM_HOSTS_ALLOWANCE, ge=1)
    """Unset: MAX_PARTICIPANTS + STREAM_HOSTS_ALLOWANCE."""
    max_event_streams_per_token: int = Field(4, ge=1)
    chunk_rate_limit: str = "50/second"
    control_allowed_ips: Networks = ()
    trusted_proxies: Networks = ()
    thumbnail_offset_seconds: float = Field(1.0, ge=0, le=86400, allow_inf_nan=False)
    thumbnail_width: int = Field(640, ge=0)
    mp4_video_codec: str = Mp4Settings.video_codec
    mp4_video_preset: str = Mp4Settings.video_preset
    mp4_video_crf: int = Field(Mp4Settings.video_crf, ge=0, le=63)
    mp4_audio_codec: str = Mp4Settings.audio_codec
    mp4_audio_bit_rate: int = Field(Mp4Settings.audio_bit_rate, ge=8_000, validation_alias="MP4_AUDIO_BITRATE")
    redis_allow_no_persistence: bool = False
    worker_metrics_port: int = Field(9191, ge=0, le=65535)
    bind_host: str = ""
    """Address the listening processes bind (web and flower on their Procfile lines, the worker's /metrics here);
    empty: every interface. `make run` sets 127.0.0.1 in development."""
    log_format: Literal["json", "text"] = "json"
    """Unset: json in production, text in development."""
    webhook_url: str | None = None
    """Where recording events are POSTed (the only URL webhooks ever go to); None sends nothing."""
    webhook_secret: str = Field("", repr=False)
    webhook_give_up_seconds: int = Field(24 * 3600, ge=60)
    webhook_timeout_seconds: float = Field(10.0, ge=0.5, le=300, allow_inf_nan=False)
    rtc: RtcSettings = Field(default_factory=RtcSettings)
    """WebRTC ingest (RTC_*): see workers/webrtc/config.py."""

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def live_steps(self) -> bool:
        """Live steps run ahead only on local staging: with object-store staging any node may finalize, and the
        live state lives on the disk of the node that folded it, so such recordings go to batch (queueing steps
        there would only fill the live queue)."""
        return self.live_finalize and self.staging_backend == "local"

    @property
    def mp4(self) -> Mp4Settings:
        """The MP4_* variables as the encoder takes them."""
        return Mp4Settings(self.mp4_video_codec, self.mp4_video_preset, self.mp4_video_crf, self.mp4_audio_codec,
                           self.mp4_audio_bit_rate)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings from env (os.environ when None); the storage provider is named or guessed from it too."""
        from storage_providers.registry import detect_provider_name

        env = os.environ if env is None else env
        settings = super().from_env(env)
        return settings.model_copy(update={"storage_provider": detect_provider_name(env),
                                           "rtc": RtcSettings.from_env(env)})

    @model_validator(mode="before")
    @classmethod
    def _defaults_that_follow_others(cls, data: Any) -> Any:
        """Defaults that depend on another variable: the mode's secret and log format, MAX_PARTICIPANTS' streams."""
        if not isinstance(data, dict):
            return data
        mode = data.get("TAPEDECK_ENV", "production")
        development = mode == "development"
        if "jwt_secret" not in data and mode in ("production", "development"):  # else TAPEDECK_ENV is reported
            if not development:
                raise ValueError("JWT_SECRET is required unless TAPEDECK_ENV=development")
            data["jwt_secret"] = DEV_JWT_SECRET
        data.setdefault("log_format", "text" if development else "json")
        participants = data.get("max_participants", cls.model_fields["max_participants"].default)
        if "max_event_streams_per_recording" not in data and str(participants).isdigit():
            data["max_event_streams_per_recording"] = int(participants) + STREAM_HOSTS_ALLOWANCE
        return data

    @field_validator("staging_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("log_format", "staging_backend", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("control_allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Comma-separated CIDRs (a bare address is a /32 or /128); a typo fails start-up rather than widening
        access."""
        try:
            return tuple(ipaddress.ip_network(part) for part in _split(value)) if isinstance(value, str) else value
        except ValueError as exc:
            raise ValueError(f"must be comma-separated CIDRs such as 10.0.0.0/8: {exc}") from None

    @field_validator("chunk_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        """A flask-limiter rate string ("50/second", "50/second;2000/minute"), checked so a typo fails start-up."""
        from limits import parse_many

        try:
            rates = parse_many(value)
        except ValueError:
            rates = []
        if not rates or any(rate.amount < 1 for rate in rates):
            raise ValueError("must be a rate such as 50/second")
        return value


class CelerySettings(RedisSettings):
    """What celeryconfig.py reads beyond Redis: time limits and beat's schedule."""

    finalize_time_limit_seconds: int = Field(3600, ge=1)
    broker_visibility_timeout_seconds: int | None = Field(None, ge=1)
    """Unset: the hard time limit (FINALIZE_TIME_LIMIT_SECONDS + 120) plus 600."""
    recover_every_seconds: float = Field(20, gt=0, le=3600, allow_inf_nan=False)
    cleanup_every_seconds: float = Field(3600, gt=0, le=86400, allow_inf_nan=False)
    auto_stop_every_seconds: float = Field(15, gt=0, le=3600, allow_inf_nan=False)
    """How often beat compares active recordings with MAX_RECORDING_SECONDS and IDLE_STOP_SECONDS."""
    celery_beat_schedule_file: str = "./var/celerybeat-schedule"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use (never at import time)."""
    return Settings.from_env()
