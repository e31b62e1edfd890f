"""`make run` as a new user runs it: web on the documented port, loopback only, and download links that work.

The stack is the real one (honcho running every Procfile line through the Makefile's recipe) against a Redis
of this test's own; ports come from the documented variables (PORT, FLOWER_PORT) so it never collides.
"""
from __future__ import annotations

import io
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, slice_timeslice
from tests.procfile import (answers, honcho_children, http, http_json, kill_session, listening_addresses,
                            minimal_env)
from tests.services import ROOT, RedisServer, free_port, wait_until

pytestmark = pytest.mark.timeout(300)

START_TIMEOUT = 120
"""Four processes importing PyAV, Celery and Flask on two busy cores: generous."""


@pytest.fixture
def make_run(tmp_path):
    """`make run` with only PATH, HOME and documented variables; yields (web port, flower port, storage, log)."""
    redis_server = RedisServer(tmp_path / "redis", appendonly=True)
    port, flower_port = free_port(), free_port()
    metrics_port = free_port()
    storage = tmp_path / "recordings"
    env = minimal_env(
        tmp_path, REDIS_URL=redis_server.url, PORT=str(port), FLOWER_PORT=str(flower_port), JWT_SECRET=JWT_SECRET,
        LOCAL_STORAGE_DIR=str(storage), STAGING_DIR=str(tmp_path / "staging"), FINALIZE_GRACE_SECONDS="1",
        CELERY_BEAT_SCHEDULE_FILE=str(tmp_path / "celerybeat-schedule"), ENV_FILE=str(tmp_path / "absent.env"),
        WORKER_METRICS_PORT=str(metrics_port), METRICS_DIR=str(tmp_path / "metrics"),
    )
    log_path = tmp_path / "make-run.log"
    log = open(log_path, "wb")
    # -o: never reinstall the venv from a test (the recipe that runs is the Makefile's own).
    process = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.runtime", "run"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield port, flower_port, storage, log_path, metrics_port
    finally:
        kill_session(process.pid, signal.SIGTERM)  # honcho stops its processes on SIGTERM
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
        for child in honcho_children(log_path.read_text(errors="replace")):
            kill_session(child)
        log.close()
        redis_server.stop()


def _wait_for_stack(port: int, flower_port: int, log_path: Path) -> None:
    def up() -> bool:
        text = log_path.read_text(errors="replace")
        assert "stopped (rc=" not in text, text[-4000:]
        return "ready." in text and answers(f"http://127.0.0.1:{port}/readyz") \
            and answers(f"http://127.0.0.1:{flower_port}/healthcheck")

    wait_until(up, START_TIMEOUT, interval=0.5, what="make run: web, worker and flower")


def test_make_run_serves_the_documented_port_on_loopback_and_its_links_download(make_run):
    from app.auth import mint_token

    port, flower_port, storage, log_path, metrics_port = make_run
    _wait_for_stack(port, flower_port, log_path)
    assert listening_addresses(port) == {"127.0.0.1"}, "development binds web to loopback only"
    assert listening_addresses(flower_port) == {"127.0.0.1"}, "development binds flower to loopback only"
    wait_until(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"), 30, what="the worker's /metrics")
    assert listening_addresses(metrics_port) == {"127.0.0.1"}, "development binds the worker's /metrics to loopback"
    live = wait_until(lambda: (ready := http_json("GET", f"http://127.0.0.1:{port}/readyz")[1]["live"])["steps"]
                      == "running" and ready, 30, what="the worker announced as a live consumer")
    assert live == {"steps": "running", "consumers": 1}  # live finalize on by default; the worker consumes `live`
    assert "this worker consumes the live queue" in log_path.read_text(errors="replace")

    base, room = f"http://localhost:{port}", "make-run"
    host = mint_token(JWT_SECRET, room, "host", "host", 600)
    alice = mint_token(JWT_SECRET, room, "alice", "participant", 600)
    status, body = http_json("POST", f"{base}/video-calls/{room}/recording/start", host)
    assert status == 201, body
    recording_id = body["recordingId"]
    now_ms = time.time() * 1000
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 3)):
        url = f"{base}/video-calls/recordings/{recording_id}/participants/alice/video/chunks/{sequence}"
        status, body = http_json("PUT", url, alice, data=piece, headers={
            "Content-Type": "application/octet-stream", "Tapedeck-Timestamp": str(now_ms + sequence * 700)})
        assert status == 202, body
    assert http_json("POST", f"{base}/video-calls/{room}/recording/stop", host)[0] == 202

    def final():
        status, body = http_json("GET", f"{base}/video-calls/recordings/{recording_id}", host)
        assert status == 200, body
        return body if body["state"] in ("completed", "failed") else None

    body = wait_until(final, 120, interval=0.5, what=f"{recording_id} to finish")
    assert body["state"] == "completed", body
    output = next(o for o in body["outputs"] if o["participantId"] == "alice")
    assert output["url"].startswith(f"{base}/files/"), output["url"]

    status, data, headers = http("GET", output["url"])
    assert status == 200, data[:200]
    assert data == (storage / output["key"]).read_bytes()
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video and container.duration
