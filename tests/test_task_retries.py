"""Tasks retried while Redis is away go through Celery's own retry (autoretry_for, retry_backoff, retry_jitter):
run eagerly against an address where Redis keeps hanging up, each task tries once and then max_retries more times,
and gives up with the connection error, never marking anything failed on the way."""
from __future__ import annotations

import socket
import threading

import pytest
import redis


class HangingUp:
    """A TCP listener that accepts and closes at once: a Redis that is down, counted per connection attempt."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.server.close()
        self._thread.join(timeout=5)


@pytest.fixture
def redis_down(monkeypatch, tmp_path):
    from tasks import runtime as runtime_module
    from workers import settings as settings_module

    down = HangingUp()
    monkeypatch.setenv("TAPEDECK_ENV", "development")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{down.port}/0")
    monkeypatch.setenv("STORAGE_PROVIDER", "local")
    monkeypatch.setenv("STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("LOCAL_STORAGE_DIR", str(tmp_path / "recordings"))
    settings_module.get_settings.cache_clear()
    runtime_module.runtime.cache_clear()
    yield down
    down.close()
    settings_module.get_settings.cache_clear()
    runtime_module.runtime.cache_clear()


@pytest.mark.parametrize("task_name", ["finalize_recording", "purge_recording"])
def test_a_redis_outage_is_retried_by_celery_then_given_up(redis_down, task_name):
    from tasks import finalize, lifecycle
    from tasks.finalize import OUTAGE_RETRY

    task = getattr(finalize, task_name, None) or getattr(lifecycle, task_name)
    result = task.apply(args=["rec_retried"])
    assert result.state == "FAILURE" and isinstance(result.result, redis.ConnectionError)
    assert redis_down.accepted == OUTAGE_RETRY["max_retries"] + 1
