"""RETENTION_DAYS: the beat task deletes ended recordings past the period and nothing else."""
from __future__ import annotations

import time

import pytest
import redis

from workers.settings import Settings
from workers.state import RecordingStore, State


def test_retention_days_is_optional_and_bounded():
    base = {"TAPEDECK_ENV": "development"}
    assert Settings.from_env(base).retention_days is None
    assert Settings.from_env({**base, "RETENTION_DAYS": "30"}).retention_days == 30.0
    assert Settings.from_env({**base, "RETENTION_DAYS": "36500"}).retention_days == 36500.0
    for bad in ("-1", "0", "36501", "inf", "nan", "1e400"):   # 0 would delete every ended recording at once
        with pytest.raises(Exception, match="RETENTION_DAYS"):
            Settings.from_env({**base, "RETENTION_DAYS": bad})


def test_beat_deletes_only_what_is_past_its_period(stack_env, room, monkeypatch):
    from tasks import lifecycle
    from tasks.runtime import runtime

    for name, value in {**stack_env, "RETENTION_DAYS": "1"}.items():
        monkeypatch.setenv(name, value)
    runtime.cache_clear()
    from workers import settings as settings_module

    getattr(settings_module.get_settings, "cache_clear", lambda: None)()
    try:
        client = redis.Redis.from_url(stack_env["REDIS_URL"])
        store = RecordingStore(client)
        ids = {}
        for name, state in (("old", State.COMPLETED), ("failed", State.FAILED), ("young", State.COMPLETED)):
            _, ids[name] = store.start(f"{room}-{name}", f"rec_ret_{name}_{room}", "webm", {})
            store.finish(ids[name], state)
        _, running = store.start(f"{room}-running", f"rec_ret_running_{room}", "webm", {})
        now = time.time()
        client.zadd("tapedeck:ended", {ids["old"]: now - 2 * 86400, ids["failed"]: now - 1.5 * 86400})
        removed = lifecycle.purge_expired.run()
        assert set(removed) >= {ids["old"], ids["failed"]}
        assert store.get(ids["old"]) is None and store.get(ids["failed"]) is None
        assert store.get(ids["young"])["state"] == "completed" and store.get(running)["state"] == "recording"
    finally:
        runtime.cache_clear()
        getattr(settings_module.get_settings, "cache_clear", lambda: None)()
