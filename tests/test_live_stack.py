"""LIVE_FINALIZE on the real stack: the Procfile's web line and a Celery worker consuming every queue (live
included), own Redis. Live steps run from chunk intake while the room records; the final chunk completes the
recording with the live output; a worker killed with -9 while recording is restarted and the recording still
completes, packet for packet the batch file."""
from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET
from tests.http_api import HttpApi
from tests.media import Recording, encode_webm, slice_timeslice
from tests.procfile import minimal_env, start_web, stop_web, wait_web
from tests.services import CeleryProcess, RedisServer, free_port, wait_until
from tests.test_live import packets
from workers.media.muxer import StreamInput, mux_participant


class Stack(HttpApi):
    def __init__(self, env: dict[str, str], base: str, worker: CeleryProcess) -> None:
        self.env, self.base, self.worker = env, base, worker

    def wait_live(self, room: str, rec: str, position: int) -> None:
        def reached() -> bool:
            live = self.status(room, rec).get("live")
            return live is not None and live["position"] >= position

        wait_until(reached, 60, interval=0.2, what=f"live position {position}")

    def stored(self, body: dict) -> Path:
        return Path(self.env["LOCAL_STORAGE_DIR"]) / body["outputs"][0]["key"]

    def live_file(self, rec: str) -> Path:
        return next(Path(self.env["STAGING_DIR"]).glob(f"**/{rec}/**/live/alice.live.webm"))

    def batch(self, rec: str, directory: Path) -> list[tuple]:
        chunks = sorted(Path(self.env["STAGING_DIR"]).glob(f"**/{rec}/**/alice/video/*.chunk"),
                        key=lambda p: int(p.name.split("-")[0]))
        inputs = [StreamInput("video", [(int(p.name.split("-")[0]), p) for p in chunks])]
        return packets(mux_participant(inputs, directory, "batch").path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("live-stack")
    server = RedisServer(root / "redis", appendonly=True)
    port = free_port()
    env = minimal_env(root, TAPEDECK_ENV="development", JWT_SECRET=JWT_SECRET, REDIS_URL=server.url,
                      STAGING_DIR=str(root / "staging"), LOCAL_STORAGE_DIR=str(root / "recordings"),
                      STAGING_MIN_FREE_BYTES="0", LIVE_FINALIZE="true", LIVE_STEP_SECONDS="1",
                      FINALIZE_GRACE_SECONDS="30", FINALIZE_LOCK_SECONDS="5", RECOVER_EVERY_SECONDS="1",
                      PORT=str(port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY="1", PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                      METRICS_DIR=str(root / "metrics"), CELERY_BEAT_SCHEDULE_FILE=str(root / "beat-schedule"))
    web = start_web(env, root / "web.log")
    worker = None
    try:
        wait_web(web, port, root / "web.log")
        worker = CeleryProcess({**env, "WORKER_METRICS_PORT": str(free_port())}, root / "worker.log")
        worker.wait_ready()
        yield Stack(env, f"http://127.0.0.1:{port}", worker)
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.stop()
        stop_web(web)
        server.stop()


def test_final_chunk_completes_with_the_live_output(stack, tmp_path):
    room = f"room-{uuid.uuid4().hex[:8]}"
    rec = stack.start(room)
    pieces = slice_timeslice(encode_webm(Recording(seconds=8)), 24)
    for sequence, piece in enumerate(pieces[:16]):
        stack.put(room, rec, sequence, piece)
    stack.wait_live(room, rec, 8)  # steps ran on the worker's live queue while the room recorded
    for sequence, piece in enumerate(pieces[16:-1], 16):
        stack.put(room, rec, sequence, piece)
    stack.control(room, "stop")
    stack.put(room, rec, len(pieces) - 1, pieces[-1], final=True)  # grace is 30 s: only the final chunk ends it
    body = stack.wait_final(room, rec)
    assert body["state"] == "completed", body
    assert stack.stored(body).read_bytes() == stack.live_file(rec).read_bytes()
    assert packets(stack.stored(body)) == stack.batch(rec, tmp_path)


def test_worker_killed_while_recording_still_completes(stack, tmp_path):
    room = f"room-{uuid.uuid4().hex[:8]}"
    rec = stack.start(room)
    pieces = slice_timeslice(encode_webm(Recording(seconds=8)), 24)
    for sequence, piece in enumerate(pieces[:12]):
        stack.put(room, rec, sequence, piece)
    stack.wait_live(room, rec, 4)
    stack.worker.kill(signal.SIGKILL)
    for sequence, piece in enumerate(pieces[12:-1], 12):
        stack.put(room, rec, sequence, piece)
    stack.worker.restart()
    stack.worker.wait_ready()
    stack.control(room, "stop")
    stack.put(room, rec, len(pieces) - 1, pieces[-1], final=True)
    body = stack.wait_final(room, rec)
    assert body["state"] == "completed", body
    assert packets(stack.stored(body)) == stack.batch(rec, tmp_path)
