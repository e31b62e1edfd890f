"""Live finalize on by default, safe by construction: intake queues a live step only while a worker consuming the
`live` queue announces itself in Redis. The Procfile's web and worker lines on their own Redis, LIVE_FINALIZE unset
(the default): a worker whose WORKER_QUEUES leave `live` out gets no step and stop takes the batch path; a worker
consuming `live` gets steps, the status' live position advances and the stored file is the live output; a live
worker killed with -9 stops counting once its announcement lapses, and intake stops queueing."""
from __future__ import annotations

import re
import signal
import uuid

import pytest
import redis
import requests

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, slice_timeslice
from tests.procfile import minimal_env, procfile_command, start_web, stop_web, wait_web
from tests.services import CeleryProcess, RedisServer, free_port, wait_until
from tests.test_live import packets
from tests.test_live_stack import Stack

EVERY_QUEUE_BUT_LIVE = "finalize,transcode,webhooks,maintenance,celery"
LIVE_QUEUE = "live"  # kombu's Redis transport keeps a queue's messages in a list named after it


class Deployment(Stack):
    def __init__(self, env: dict[str, str], base: str, root, client: redis.Redis) -> None:
        super().__init__(env, base, None)  # type: ignore[arg-type]
        self.root, self.redis = root, client

    def worker_line(self, queues: str) -> CeleryProcess:
        """The Procfile's worker line with these WORKER_QUEUES (empty: every queue), started and ready."""
        name = f"w{uuid.uuid4().hex[:6]}"
        variables = {**self.env, "WORKER_QUEUES": queues, "WORKER_CONCURRENCY": "1", "WORKER_NAME": name,
                     "WORKER_METRICS_PORT": str(free_port())}
        process = CeleryProcess(variables, self.root / f"worker-{name}.log", argv=["bash", "-c", procfile_command("worker")])
        process.wait_ready()
        self.worker = process
        return process

    def live_steps(self) -> dict:
        return requests.get(f"{self.base}/readyz", timeout=10).json()["live"]

    def wait_steps(self, steps: str) -> dict:
        return wait_until(lambda: (live := self.live_steps())["steps"] == steps and live, 30, interval=0.2,
                          what=f"readyz live.steps {steps}")

    def unqueued(self) -> float:
        text = requests.get(f"{self.base}/metrics", timeout=10).text
        found = re.search(r"^tapedeck_live_steps_unqueued_total (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, staging_backend):
    if staging_backend != "local":
        pytest.skip("live steps run on local staging only")
    root = tmp_path_factory.mktemp("live-consumers")
    server = RedisServer(root / "redis", appendonly=True)
    port = free_port()
    env = minimal_env(root, TAPEDECK_ENV="development", JWT_SECRET=JWT_SECRET, REDIS_URL=server.url,
                      STAGING_DIR=str(root / "staging"), LOCAL_STORAGE_DIR=str(root / "recordings"),
                      STAGING_MIN_FREE_BYTES="0", LIVE_STEP_SECONDS="1", LIVE_CONSUMER_REFRESH_SECONDS="1",
                      FINALIZE_GRACE_SECONDS="30", FINALIZE_LOCK_SECONDS="5", RECOVER_EVERY_SECONDS="1",
                      PORT=str(port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY="1", PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                      METRICS_DIR=str(root / "metrics"), CELERY_BEAT_SCHEDULE_FILE=str(root / "beat-schedule"))
    web = start_web(env, root / "web.log")
    client = redis.Redis.from_url(server.url)
    try:
        wait_web(web, port, root / "web.log")
        yield Deployment(env, f"http://127.0.0.1:{port}", root, client)
    finally:
        stop_web(web)
        client.close()
        server.stop()


@pytest.fixture
def stack(deployment):
    yield deployment
    if deployment.worker is not None and deployment.worker.process.poll() is None:
        deployment.worker.stop()
    deployment.worker = None


@pytest.fixture(scope="module")
def pieces() -> list[bytes]:
    return slice_timeslice(encode_webm(Recording(seconds=8)), 24)


def test_without_a_live_worker_no_step_is_queued_and_stop_takes_the_batch_path(stack, pieces, tmp_path):
    worker = stack.worker_line(EVERY_QUEUE_BUT_LIVE)
    assert "does not consume the live queue" in worker.log_path.read_text()
    assert stack.wait_steps("no_consumer") == {"steps": "no_consumer", "consumers": 0}
    unqueued = stack.unqueued()
    room = f"room-{uuid.uuid4().hex[:8]}"
    rec = stack.start(room)
    for sequence, piece in enumerate(pieces[:-1]):
        stack.put(room, rec, sequence, piece)
    assert stack.redis.llen(LIVE_QUEUE) == 0  # nothing waits on a queue nobody consumes
    assert stack.unqueued() > unqueued  # the step intake would have queued is counted
    assert stack.status(room, rec)["live"] is None
    stack.control(room, "stop")
    stack.put(room, rec, len(pieces) - 1, pieces[-1], final=True)
    body = stack.wait_final(room, rec)
    assert body["state"] == "completed", body
    output = body["outputs"][0]
    assert output["sha256"] and "checksum" not in output  # the batch output: a whole-file SHA-256
    assert packets(stack.stored(body)) == stack.batch(rec, tmp_path)


def test_by_default_a_live_worker_gets_steps_and_stores_the_live_output(stack, pieces, tmp_path):
    worker = stack.worker_line("")  # no WORKER_QUEUES: every queue, live included
    assert "consumes the live queue" in worker.log_path.read_text()
    assert stack.wait_steps("running")["consumers"] == 1
    room = f"room-{uuid.uuid4().hex[:8]}"
    rec = stack.start(room)
    for sequence, piece in enumerate(pieces[:12]):
        stack.put(room, rec, sequence, piece)
    stack.wait_live(room, rec, 4)  # steps ran on the worker's live queue while the room recorded
    first = stack.status(room, rec)["live"]["position"]
    for sequence, piece in enumerate(pieces[12:-1], 12):
        stack.put(room, rec, sequence, piece)
    stack.wait_live(room, rec, first + 1)  # and the position advances with the chunks
    stack.control(room, "stop")
    stack.put(room, rec, len(pieces) - 1, pieces[-1], final=True)
    body = stack.wait_final(room, rec)
    assert body["state"] == "completed", body
    assert body["outputs"][0]["sha256"] is None and body["outputs"][0]["checksum"]["algorithm"] == "sha256-parts"
    assert stack.stored(body).read_bytes() == stack.live_file(rec).read_bytes()
    assert packets(stack.stored(body)) == stack.batch(rec, tmp_path)
    worker.stop()  # a clean shutdown withdraws at once
    assert stack.wait_steps("no_consumer")["consumers"] == 0


def test_a_live_worker_killed_with_9_lapses_and_intake_stops_queueing(stack, pieces):
    worker = stack.worker_line(LIVE_QUEUE)
    stack.wait_steps("running")
    worker.kill(signal.SIGKILL)  # no shutdown: only the announcement's lapse (3 × 1 s here) can tell
    assert stack.wait_steps("no_consumer")["consumers"] == 0
    waiting = stack.redis.llen(LIVE_QUEUE)
    room = f"room-{uuid.uuid4().hex[:8]}"
    rec = stack.start(room)
    for sequence, piece in enumerate(pieces[:12]):
        stack.put(room, rec, sequence, piece)
    assert stack.redis.llen(LIVE_QUEUE) == waiting
    assert stack.status(room, rec)["live"] is None
