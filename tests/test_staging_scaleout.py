"""Scale-out on object-store staging (issue 14): a web node and two worker nodes that share nothing but Redis and the
bucket (the moto S3 server), each with its own STAGING_DIR. Chunks accepted by the web process are finalized by a
worker that never saw them, into the same packets as a single-node run on local staging; a worker killed mid-finalize
is replaced by the other; an in-progress recording whose Redis keys are gone is rebuilt from the bucket."""
from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
import redis
import requests

from tests.conftest import JWT_SECRET
from tests.http_api import HttpApi
from tests.media import Recording, encode_webm, slice_timeslice
from tests.procfile import minimal_env, procfile_command, start_web, stop_web, wait_web
from tests.services import ROOT, VENV_BIN, CeleryProcess, RedisServer, free_port, wait_until
from tests.storage_servers import s3_client
from workers import keys

PARTICIPANTS = [f"p{i}" for i in range(6)]
"""Enough work that a finalize is still running when the test kills its worker."""


@dataclass
class Cluster(HttpApi):
    env: dict[str, str]
    base: str
    redis: redis.Redis
    web_staging: Path
    workers: dict[str, CeleryProcess]
    """The finalize/transcode worker processes (a, b), each with its own STAGING_DIR."""
    ops: CeleryProcess
    scratch: dict[str, Path]

    def output(self, body: dict, participant: str, directory: Path) -> Path:
        key = next(o["key"] for o in body["outputs"] if o["participantId"] == participant)
        path = directory / f"{participant}-{uuid.uuid4().hex[:6]}.webm"
        s3_client(self.env).download_file(self.env["S3_BUCKET"], f"{self.env['S3_PREFIX']}/{key}", str(path))
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)


def packets(path: Path) -> tuple[list[tuple[str, int | None, int, bool]], float]:
    """Every packet (stream type, pts, size, keyframe) and the container's duration: what a player gets."""
    with av.open(str(path)) as container:
        found = [(p.stream.type, p.pts, p.size, bool(p.is_keyframe)) for p in container.demux() if p.size]
        return found, (container.duration or 0) / av.time_base


def staged_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.chunk")] if directory.exists() else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto_server):
    """Own Redis; the README's two-node layout from the Procfile: web, beat and a webhooks/maintenance worker (STAGING_DIR
    web/, ops/), and two finalize/transcode worker processes (a/, b/) standing for worker nodes."""
    root = tmp_path_factory.mktemp("scaleout")
    server = RedisServer(root / "redis", appendonly=True)
    port = free_port()
    env = minimal_env(root, **moto_server, TAPEDECK_ENV="development", JWT_SECRET=JWT_SECRET, REDIS_URL=server.url,
                      STAGING_BACKEND="object-store", S3_PREFIX=f"scaleout-{uuid.uuid4().hex[:8]}",
                      FINALIZE_GRACE_SECONDS="1", FINALIZE_LOCK_SECONDS="5", RECOVER_EVERY_SECONDS="1",
                      UPLOAD_RETRY_BASE_SECONDS="0.05", PORT=str(port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY="1",
                      PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", METRICS_DIR=str(root / "metrics"),
                      CELERY_BEAT_SCHEDULE_FILE=str(root / "beat-schedule"))
    web_env = {**env, "STAGING_DIR": str(root / "web")}
    web = start_web(web_env, root / "web.log")
    processes: dict[str, CeleryProcess] = {}
    try:
        wait_web(web, port, root / "web.log")
        scratch = {name: root / name for name in ("a", "b")}
        for name, directory in scratch.items():  # the worker node's line: finalize and transcode (MP4) beside it
            processes[name] = _worker_line(env, root, name, directory, "finalize,transcode")
        processes["ops"] = _worker_line(env, root, "ops", root / "ops", "webhooks,maintenance,celery")  # web node's
        for process in processes.values():
            process.wait_ready()
        processes["beat"] = CeleryProcess({**env, "STAGING_DIR": str(root / "beat")}, root / "beat.log", "beat",
                                          "--schedule", str(root / "beat-schedule"))
        yield Cluster(env={**env, "STAGING_DIR": str(root / "cli")}, base=f"http://127.0.0.1:{port}",
                      redis=redis.Redis.from_url(server.url), web_staging=root / "web",
                      workers={k: v for k, v in processes.items() if k in scratch}, ops=processes["ops"],
                      scratch=scratch)
    finally:
        for process in processes.values():
            if process.process.poll() is None:
                process.stop()
        stop_web(web)
        server.stop()


def _worker_line(env: dict[str, str], root: Path, name: str, staging: Path, queues: str) -> CeleryProcess:
    """The Procfile's `worker` line as a node runs it: its own queues, name, metrics port and STAGING_DIR."""
    variables = {**env, "STAGING_DIR": str(staging), "WORKER_QUEUES": queues, "WORKER_CONCURRENCY": "1",
                 "WORKER_NAME": f"{name}-{uuid.uuid4().hex[:6]}", "WORKER_METRICS_PORT": str(free_port())}
    return CeleryProcess(variables, root / f"worker-{name}.log", argv=["bash", "-c", procfile_command("worker")])


def banner_queues(process: CeleryProcess) -> list[str]:
    """The queues a worker's start-up banner says it consumes (".> finalize  exchange=finalize(direct) …")."""
    return sorted(line.split(".> ", 1)[1].split()[0] for line in process.log_path.read_text(errors="replace").splitlines()
                  if ".> " in line and "exchange=" in line)


@pytest.fixture(scope="module")
def pieces() -> list[bytes]:
    return slice_timeslice(encode_webm(Recording(seconds=3.0)), 6)


def test_worker_queues_split_finalize_from_the_rest(cluster):
    """WORKER_QUEUES on the Procfile's worker line: the worker node's processes take finalize and transcode only."""
    assert all(banner_queues(process) == ["finalize", "transcode"] for process in cluster.workers.values())
    assert banner_queues(cluster.ops) == ["celery", "maintenance", "webhooks"]


def test_a_worker_that_never_saw_the_chunks_produces_the_single_node_output(cluster, api, worker, pieces, tmp_path):
    room = f"room-{uuid.uuid4().hex[:10]}"
    recording_id = cluster.start(room)
    for sequence, piece in enumerate(pieces):
        cluster.put(room, recording_id, sequence, piece)
    assert staged_files(cluster.web_staging) == []  # the web node keeps nothing on its disk
    names = [info.key for info in _bucket_keys(cluster, f"staging/{recording_id}/")]
    assert len([n for n in names if n.endswith(".chunk")]) == len(pieces) and any(n.endswith("recording.json") for n in names)
    cluster.control(room, "stop")
    body = cluster.wait_final(room, recording_id)
    assert body["state"] == "completed", body
    scaled = packets(cluster.output(body, "alice", tmp_path))

    single = api.start().get_json()["recordingId"]  # the session's one-node stack, same chunks
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(single, "alice", "video", sequence, piece).status_code == 202
    assert api.stop().status_code == 202
    reference = api.wait_final(single)
    assert reference["state"] == "completed", reference
    expected = packets(api.output_path(reference, "alice"))
    assert scaled[0] == expected[0] and len(scaled[0]) > 0
    assert abs(scaled[1] - expected[1]) < 0.001
    assert [o["durationSeconds"] for o in body["outputs"]] == [o["durationSeconds"] for o in reference["outputs"]]
    for directory in cluster.scratch.values():  # the worker's fetched copies and outputs are gone once completed
        assert not (directory / recording_id).exists()


def test_a_worker_killed_mid_finalize_is_replaced_by_the_other(cluster, pieces, tmp_path):
    room = f"room-{uuid.uuid4().hex[:10]}"
    recording_id = cluster.start(room)
    for participant in PARTICIPANTS:
        for sequence, piece in enumerate(pieces):
            cluster.put(room, recording_id, sequence, piece, participant=participant)
    cluster.control(room, "stop")
    wait_until(lambda: cluster.redis.exists(keys.finalize_lock(recording_id)), 30, interval=0.005,
               what="finalize to start")
    doomed = wait_until(lambda: next((name for name, directory in cluster.scratch.items()
                                      if (directory / recording_id).exists()), None),
                        10, interval=0.005, what="a worker to fetch the chunks onto its own disk")
    cluster.workers[doomed].kill()
    assert cluster.status(room, recording_id)["state"] in ("finalizing", "muxing", "uploading")
    body = cluster.wait_final(room, recording_id, timeout=120)
    assert body["state"] == "completed", body
    assert sorted(o["participantId"] for o in body["outputs"]) == PARTICIPANTS
    first = packets(cluster.output(body, "p0", tmp_path))
    assert all(packets(cluster.output(body, p, tmp_path)) == first for p in PARTICIPANTS[1:])
    survivor = next(name for name in cluster.workers if name != doomed)
    assert "succeeded" in cluster.workers[survivor].log_path.read_text(errors="replace")
    cluster.workers[doomed].restart()  # the next test has both again
    cluster.workers[doomed].wait_ready()


def test_rebuild_restores_an_in_progress_recording_from_the_bucket(cluster, pieces, tmp_path):
    room = f"room-{uuid.uuid4().hex[:10]}"
    reply = requests.post(f"{cluster.base}/video-calls/{room}/recording/start", json={"format": "mp4"},
                          headers=cluster.auth(room), timeout=30)
    assert reply.status_code == 201, reply.text
    recording_id = reply.json()["recordingId"]
    for participant in ("alice", "bob"):
        for sequence, piece in enumerate(pieces[:3]):
            cluster.put(room, recording_id, sequence, piece, participant=participant)
    cluster.control(room, "pause")
    cluster.control(room, "resume")
    for participant in ("alice", "bob"):
        for sequence, piece in enumerate(pieces[3:], start=3):
            cluster.put(room, recording_id, sequence, piece, participant=participant)
    before = cluster.status(room, recording_id)
    assert before["state"] == "recording" and len(before["pauses"]) == 1
    doomed = list(cluster.redis.scan_iter(match=keys.recording(recording_id) + "*"))
    cluster.redis.delete(*doomed)  # a failover to a replica that never got them
    assert cluster.status(room, recording_id).get("error", {}).get("code") == "not_found"

    result = cluster.cli("rebuild", recording_id)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{2 * len(pieces)} chunks" in result.stdout
    rebuilt = cluster.status(room, recording_id)
    assert rebuilt["room"] == room and rebuilt["format"] == "mp4" and rebuilt["state"] == "failed"
    assert rebuilt["pauses"] == before["pauses"]
    assert {pid: entry["video"]["chunks"] for pid, entry in rebuilt["participants"].items()} == {"alice": 6, "bob": 6}
    result = cluster.cli("requeue", recording_id)
    assert result.returncode == 0, result.stderr + result.stdout
    body = cluster.wait_final(room, recording_id)
    assert body["state"] == "completed", body
    assert sorted(o["participantId"] for o in body["outputs"]) == ["alice", "bob"]
    assert all(o["format"] == "mp4" for o in body["outputs"])


def _bucket_keys(cluster: Cluster, prefix: str):
    from storage_providers import create_provider

    return list(create_provider(env=cluster.env).list(prefix))
