"""Settings are parsed one way (pydantic-settings): every default in one place, every bad value a clear error naming
its variable, before anything connects."""
from __future__ import annotations

import pytest

from storage_providers.base import StorageConfigError
from workers.errors import ConfigurationError
from workers.settings import DEV_JWT_SECRET, STREAM_HOSTS_ALLOWANCE, CelerySettings, Settings

DEV = {"TAPEDECK_ENV": "development"}


def test_unset_and_blank_variables_take_the_documented_defaults():
    blank = Settings.from_env({**DEV, "PORT": "", "MAX_CHUNK_BYTES": "   ", "RECORDING_FORMAT": ""})
    for settings in (Settings.from_env(DEV), blank):
        assert (settings.port, settings.max_chunk_bytes, settings.recording_format) == (8000, 8 * 1024 * 1024, "webm")
        assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.jwt_secret == DEV_JWT_SECRET
        assert settings.max_event_streams_per_recording == 100 + STREAM_HOSTS_ALLOWANCE
        assert settings.mp4.video_codec == "libx264" and settings.mp4.audio_bit_rate == 128_000
        assert settings.staging_dir.is_absolute() and settings.log_format == "text"
    assert not hasattr(Settings.from_env(DEV), "public_base_url")  # the local provider's PUBLIC_BASE_URL only


def test_values_are_stripped_and_read_by_their_variable_names():
    settings = Settings.from_env({**DEV, "PORT": " 9000 ", "MP4_AUDIO_BITRATE": "96000", "CORS_ORIGINS": "a, ,b",
                                  "TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1", "JWT_SECRET": " spaced secret "})
    assert settings.port == 9000 and settings.mp4.audio_bit_rate == 96000
    assert settings.cors_origins == ("a", "b")
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert settings.jwt_secret == " spaced secret "  # a secret is kept byte for byte
    assert "spaced secret" not in repr(settings)


@pytest.mark.parametrize("name, value", [
    ("PORT", "eighty"), ("PORT", "0"), ("PORT", "70000"), ("MAX_CHUNK_BYTES", "0"), ("MAX_PARTICIPANTS", "-1"),
    ("FINALIZE_LOCK_SECONDS", "4"), ("RECORDING_FORMAT", "avi"), ("TAPEDECK_ENV", "prod"), ("LOG_FORMAT", "xml"),
    ("REDIS_ALLOW_NO_PERSISTENCE", "maybe"), ("RETENTION_DAYS", "-1"), ("MP4_VIDEO_CRF", "99"),
    ("MP4_AUDIO_BITRATE", "100"), ("WEBHOOK_TIMEOUT_SECONDS", "0.1"), ("TRUSTED_PROXIES", "10.0.0/8"),
    ("LIVE_STEP_SECONDS", "0.5"), ("LIVE_TRANSCODE_STEP_SECONDS", "0.5"),
])
def test_a_bad_value_fails_naming_its_variable_and_the_value(name, value):
    with pytest.raises(ConfigurationError, match=name) as caught:
        Settings.from_env({**DEV, name: value})
    assert repr(value) in str(caught.value) or value in str(caught.value)


def test_secrets_are_never_echoed_in_an_error():
    with pytest.raises(ConfigurationError, match="REDIS_SENTINELS") as caught:
        Settings.from_env({**DEV, "REDIS_SENTINELS": "nohost", "REDIS_SENTINEL_MASTER": "m",
                           "REDIS_SENTINEL_PASSWORD": "hunter2"})
    assert "hunter2" not in str(caught.value)
    from storage_providers.vercel_blob import VercelBlobSettings

    with pytest.raises(StorageConfigError, match="BLOB_READ_WRITE_TOKEN") as caught:
        VercelBlobSettings.from_env({"BLOB_READ_WRITE_TOKEN": "not-a-token-sekrit"})
    assert "sekrit" not in str(caught.value)


def test_choice_words_are_case_insensitive():
    settings = Settings.from_env({**DEV, "STAGING_BACKEND": "Object-Store", "LOG_FORMAT": "JSON"})
    assert (settings.staging_backend, settings.log_format) == ("object-store", "json")


def test_a_default_follows_the_variable_it_depends_on():
    assert Settings.from_env({**DEV, "MAX_PARTICIPANTS": "300"}).max_event_streams_per_recording == 316
    assert Settings.from_env({**DEV, "MAX_PARTICIPANTS": "300", "MAX_EVENT_STREAMS_PER_RECORDING": "5"}) \
        .max_event_streams_per_recording == 5
    assert Settings.from_env({"JWT_SECRET": "s"}).log_format == "json"


def test_settings_are_frozen():
    settings = Settings.from_env(DEV)
    with pytest.raises(Exception):
        settings.port = 1  # type: ignore[misc]


def test_settings_do_not_load_pyav(tmp_path):
    """Web processes parse settings without PyAV: MP4 encoder settings live apart from the transcoder."""
    import subprocess
    import sys

    code = "import sys, workers.settings, celeryconfig; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "beat")})
    assert out.stdout.strip() == "False"


def test_celery_settings_share_redis_and_refuse_bad_values():
    assert CelerySettings.from_env({}).redis_url == Settings.from_env(DEV).redis_url
    assert CelerySettings.from_env({}).finalize_time_limit_seconds == 3600
    for name, value in (("FINALIZE_TIME_LIMIT_SECONDS", "0"), ("RECOVER_EVERY_SECONDS", "soon"),
                        ("BROKER_VISIBILITY_TIMEOUT_SECONDS", "-5")):
        with pytest.raises(ConfigurationError, match=name):
            CelerySettings.from_env({name: value})


@pytest.mark.parametrize("module, env, name", [
    ("s3", {}, "S3_BUCKET"),
    ("s3", {"S3_BUCKET": "b", "AWS_MAX_ATTEMPTS": "0"}, "AWS_MAX_ATTEMPTS"),
    ("s3", {"S3_BUCKET": "b", "STORAGE_PART_SIZE": "1024"}, "STORAGE_PART_SIZE"),
    ("s3", {"S3_BUCKET": "b", "STORAGE_PART_SIZE": str(5 * 1024**3 + 1)}, "STORAGE_PART_SIZE"),
    ("s3", {"S3_BUCKET": "b", "AWS_MAX_ATTEMPTS": "21"}, "AWS_MAX_ATTEMPTS"),
    ("s3", {"S3_BUCKET": "b", "S3_FORCE_PATH_STYLE": "perhaps"}, "S3_FORCE_PATH_STYLE"),
    ("gcs", {"GCS_BUCKET": "b", "GCS_CREDENTIALS_FILE": "/nonexistent/key.json"}, "GCS_CREDENTIALS_FILE"),
    ("vercel_blob", {"BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_"}, "BLOB_READ_WRITE_TOKEN"),
])
def test_a_provider_setting_error_names_its_variable(module, env, name):
    import importlib

    with pytest.raises(StorageConfigError, match=name):
        importlib.import_module(f"storage_providers.{module}").create(env)


def test_provider_settings_read_their_variables():
    from storage_providers.gcs import GcsSettings
    from storage_providers.s3 import S3Settings
    from storage_providers.vercel_blob import VercelBlobSettings

    s3 = S3Settings.from_env({"S3_BUCKET": "b", "S3_PREFIX": "/rec/", "AWS_REGION": "eu-west-1",
                              "S3_FORCE_PATH_STYLE": "true", "AWS_SECRET_ACCESS_KEY": "sekrit"})
    assert (s3.prefix, s3.region, s3.force_path_style, s3.part_size) == ("rec/", "eu-west-1", True, 8 * 1024 * 1024)
    assert "sekrit" not in repr(s3)
    gcs = GcsSettings.from_env({"GCS_BUCKET": "b", "STORAGE_EMULATOR_HOST": "localhost:4443/",
                                "STORAGE_PART_SIZE": str(5 * 1024 * 1024 + 1000)})
    assert gcs.emulator_host == "http://localhost:4443" and gcs.chunk_size == 5 * 1024 * 1024
    blob = VercelBlobSettings.from_env({"BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_store_secret"})
    assert (blob.store_id, blob.key_secret) == ("store", "secret") and "secret" not in repr(blob)


def test_the_environment_is_read_through_from_env_only(monkeypatch):
    """A model built directly (a field's default, a test fixture) holds defaults, never the process's variables."""
    from workers.webrtc.config import RtcSettings

    monkeypatch.setenv("RTC_MAX_PEERS", "7")
    monkeypatch.setenv("FINALIZE_TIME_LIMIT_SECONDS", "99")
    assert RtcSettings().max_peers == 50 and RtcSettings.from_env().max_peers == 7
    assert CelerySettings().finalize_time_limit_seconds == 3600
    assert CelerySettings.from_env().finalize_time_limit_seconds == 99
    assert Settings.from_env(DEV).rtc == RtcSettings()  # from_env was given DEV, not os.environ


def test_ice_servers_may_carry_credentials_and_are_never_echoed():
    with pytest.raises(ConfigurationError, match="RTC_ICE_SERVERS") as caught:
        Settings.from_env({**DEV, "RTC_ICE_SERVERS": '[{"urls": "http://turn", "credential": "hunter2"}]'})
    assert "hunter2" not in str(caught.value)


def test_env_example_lists_every_variable_the_settings_read():
    """README promises `.env.example` lists every variable: a setting added without its line there fails here."""
    import re
    from pathlib import Path

    from workers.settings import RtcSettings, Settings

    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (Path(__file__).parent.parent / ".env.example").read_text(), re.M))
    read = set()
    for model in (Settings, RtcSettings):
        for name, field in model.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str) or alias is None:
                read.add(alias or name.upper())
    assert read - {"RTC"} - listed == set()


@pytest.mark.parametrize("name, top", [
    ("FINALIZE_GRACE_SECONDS", "3600"), ("UPLOAD_RETRY_BASE_SECONDS", "300"), ("THUMBNAIL_OFFSET_SECONDS", "86400"),
    ("WEBHOOK_TIMEOUT_SECONDS", "300"), ("RECOVER_EVERY_SECONDS", "3600"), ("CLEANUP_EVERY_SECONDS", "86400"),
    ("AUTO_STOP_EVERY_SECONDS", "3600"), ("LIVE_STEP_SECONDS", "600"), ("LIVE_TRANSCODE_STEP_SECONDS", "600"),
])
def test_durations_have_an_upper_bound_and_must_be_finite(name, top):
    """Found from outside: FINALIZE_GRACE_SECONDS=inf started, then every stop queued a countdown of infinity."""
    model = CelerySettings if name.endswith("_EVERY_SECONDS") else Settings
    env = {} if model is CelerySettings else DEV
    assert getattr(model.from_env({**env, name: top}), name.lower()) == float(top)
    for bad in (str(float(top) + 1), "inf", "1e400", "nan"):
        with pytest.raises(ConfigurationError, match=name):
            model.from_env({**env, name: bad})


def test_live_steps_run_only_on_local_staging():
    """LIVE_FINALIZE with object-store staging queues no live step (any node may finalize; live state is per node).
    On by default on local staging; LIVE_FINALIZE=false still turns it off."""
    assert Settings.from_env(DEV).live_steps
    assert Settings.from_env({**DEV, "LIVE_FINALIZE": "true"}).live_steps
    assert not Settings.from_env({**DEV, "LIVE_FINALIZE": "false"}).live_steps
    assert not Settings.from_env({**DEV, "STAGING_BACKEND": "object-store"}).live_steps
    assert not Settings.from_env({**DEV, "LIVE_FINALIZE": "true", "STAGING_BACKEND": "object-store"}).live_steps
