"""Arrows only point down: app → tasks → workers → storage_providers (STYLE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "storage_providers": {"app", "tasks", "workers", "flask", "celery"},
    "workers": {"app", "tasks", "flask", "celery"},
    "tasks": {"app", "flask"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_roots(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_media_package_knows_no_recording():
    """workers/media is paths and packets in, files and facts out: no Redis, staging or recording module."""
    offenders = {}
    for path in (ROOT / "workers" / "media").rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        bad = sorted(m for m in modules if m == "redis" or (m.startswith("workers.") and not m.startswith("workers.media")))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_keys_are_exact():
    from workers import keys

    assert keys.recording("rec_1") == "tapedeck:rec:rec_1"
    assert keys.room_current("r") == "tapedeck:room:r:current"
    assert keys.room_recordings("r") == "tapedeck:room:r:recordings"
    assert keys.recording_keys_pattern("rec_1") == "tapedeck:rec:rec_1:*"
    assert keys.upload_sessions_pattern("rec_1") == "tapedeck:upload:rec_1:*"
    assert keys.streams("rec_1") == "tapedeck:rec:rec_1:streams"
    assert keys.stream_chunks("rec_1", "alice", "video") == "tapedeck:rec:rec_1:chunks:alice:video"
    assert keys.events("rec_1") == "tapedeck:rec:rec_1:events"
    assert keys.events_channel("rec_1") == "tapedeck:events:rec_1"
    assert keys.finalize_lock("rec_1") == "tapedeck:lock:finalize:rec_1"
    assert keys.upload_session("rec_1", "recordings/r/rec_1/a.webm") == "tapedeck:upload:rec_1:recordings/r/rec_1/a.webm"
    assert keys.pending_finalize() == "tapedeck:pending-finalize"
    assert keys.recording_prefix() == "tapedeck:rec:"  # the Lua scripts append the room's current id to it
    assert keys.participants("rec_1") == "tapedeck:rec:rec_1:participants"
    assert keys.stream_stats("rec_1", "alice", "video") == "tapedeck:rec:rec_1:stats:alice:video"
    assert keys.stream_holes("rec_1", "alice", "video") == "tapedeck:rec:rec_1:holes:alice:video"
    assert keys.stream_stats_prefix("rec_1") == "tapedeck:rec:rec_1:stats:"  # the end-of-stream script appends
    assert keys.stream_holes_prefix("rec_1") == "tapedeck:rec:rec_1:holes:"  # "<participantId>:<type>" to them
    assert keys.stream_unreadable("rec_1", "alice", "video") == "tapedeck:rec:rec_1:unreadable:alice:video"
    assert keys.completed_index() == "tapedeck:completed"
    assert keys.ended_index() == "tapedeck:ended"
    assert keys.event_stream_leases("rec_1") == "tapedeck:rec:rec_1:stream-leases"
    assert keys.token_stream_leases("d1g") == "tapedeck:token:d1g:stream-leases"
    assert keys.rate_limits() == "tapedeck:limits"
    assert keys.webhook_outbox("rec_1") == "tapedeck:webhooks:rec_1"
    assert keys.webhook_sender("rec_1") == "tapedeck:webhooks:rec_1:sender"
    assert keys.webhook_events("rec_1") == "tapedeck:webhooks:rec_1:events"


def test_unknown_storage_provider_fails_naming_the_variable():
    from storage_providers.registry import UnknownProviderError
    from workers.settings import Settings

    with pytest.raises(UnknownProviderError, match="STORAGE_PROVIDER"):
        Settings.from_env({"TAPEDECK_ENV": "development", "STORAGE_PROVIDER": "ftp"})


def test_a_provider_misconfiguration_is_the_one_configuration_error(tmp_path):
    from workers.errors import ConfigurationError
    from workers.resources import Resources
    from workers.settings import Settings

    env = {"TAPEDECK_ENV": "development", "STORAGE_PROVIDER": "s3", "S3_BUCKET": "b", "AWS_MAX_ATTEMPTS": "zero",
           "STAGING_DIR": str(tmp_path)}
    with pytest.raises(ConfigurationError, match="AWS_MAX_ATTEMPTS"):
        Resources.build(Settings.from_env(env), env)


def test_production_requires_jwt_secret():
    from workers.errors import ConfigurationError
    from workers.settings import Settings

    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        Settings.from_env({})
    assert Settings.from_env({"TAPEDECK_ENV": "development"}).jwt_secret


def test_provider_auto_detection():
    from storage_providers.registry import detect_provider_name

    assert detect_provider_name({}) == "local"
    assert detect_provider_name({"GCS_BUCKET": "b"}) == "gcs"
    assert detect_provider_name({"S3_BUCKET": "b", "GCS_BUCKET": "b"}) == "s3"
    assert detect_provider_name({"BLOB_READ_WRITE_TOKEN": "t", "S3_BUCKET": "b"}) == "vercel-blob"
