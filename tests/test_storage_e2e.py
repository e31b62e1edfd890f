"""A recording end to end on each cloud provider: the Procfile's web and worker processes, chunks over real
HTTP, finalize with a multipart/resumable upload, the object in the bucket, then download and decode."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, probe, slice_timeslice
from tests.procfile import procfile_command
from tests.services import ROOT, VENV_BIN, CeleryProcess, free_port, wait_until

PROVIDER_DB = {"s3": 3, "gcs": 4, "vercel-blob": 5}
"""Each stack gets its own Redis database: its own broker queue, state and events."""



def http(method: str, url: str, token: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def big_recording():
    """~8 MB of incompressible VP8: larger than the 5 MiB part size, so the upload goes in parts."""
    data = encode_webm(Recording(seconds=3.0, width=640, height=480, noise=True, video_bit_rate=20_000_000))
    return slice_timeslice(data, 6)


@pytest.fixture(params=sorted(PROVIDER_DB))
def cloud_stack(request, redis_server, tmp_path):
    """`web` and `worker` exactly as the Procfile runs them (bash -c, programs from PATH), on one provider."""
    name = request.param
    provider_env = request.getfixturevalue({"s3": "moto_server", "gcs": "gcs_emulator",
                                            "vercel-blob": "vercel_blob_double"}[name])
    port = free_port()
    env = {
        **os.environ, **provider_env,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PORT": str(port), "TAPEDECK_ENV": "production",
        "JWT_SECRET": JWT_SECRET, "REDIS_URL": f"{redis_server.url.rsplit('/', 1)[0]}/{PROVIDER_DB[name]}",
        "STAGING_DIR": str(tmp_path / "staging"), "FINALIZE_GRACE_SECONDS": "1", "WEB_CONCURRENCY": "1",
        "WORKER_CONCURRENCY": "1", "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
    }
    web_log = open(tmp_path / "web.log", "wb")
    web = subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT, env=env, stdout=web_log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    worker = CeleryProcess(env, tmp_path / "worker.log", argv=["bash", "-c", procfile_command("worker")])
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(base), 30, what=f"web on {base}")
    worker.wait_ready()
    from storage_providers import create_provider

    yield name, base, create_provider(name, provider_env)
    worker.stop()
    os.killpg(web.pid, 15)
    web.wait(10)
    web_log.close()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_recording_lands_in_the_bucket_and_plays(cloud_stack, big_recording):
    from app.auth import mint_token

    name, base, provider = cloud_stack
    pieces = big_recording
    room = f"cloud-{name}"
    host, alice = mint_token(JWT_SECRET, room, "host", "host"), mint_token(JWT_SECRET, room, "alice", "participant")
    status, body = http("POST", f"{base}/video-calls/{room}/recording/start", host)
    assert status == 201, body
    recording_id = body["recordingId"]
    for sequence, piece in enumerate(pieces):
        url = f"{base}/video-calls/recordings/{recording_id}/participants/alice/video/chunks/{sequence}"
        status, body = http("PUT", url, alice, piece, {"Content-Type": "application/octet-stream"})
        assert status == 202, body
    assert http("POST", f"{base}/video-calls/{room}/recording/stop", host)[0] == 202

    def finished():
        body = http("GET", f"{base}/video-calls/recordings/{recording_id}", alice)[1]
        return body if body["state"] in ("completed", "failed") else None

    body = wait_until(finished, 90, interval=0.5, what="finalize")
    assert body["state"] == "completed", body
    [output] = body["outputs"]
    assert output["provider"] == name and output["key"] == f"recordings/{room}/{recording_id}/alice.webm"
    info = provider.head(output["key"])
    assert info.size == output["bytes"] > 5 * 1024 * 1024
    if provider.stores_metadata:
        assert info.metadata.get("sha256") == output["sha256"]
        assert info.metadata.get("recording-id") == recording_id
    keys = sorted(o.key for o in provider.list(f"recordings/{room}/{recording_id}/"))
    assert keys == sorted([output["key"], output["thumbnailKey"], f"recordings/{room}/{recording_id}/manifest.json"])

    with urllib.request.urlopen(output["url"], timeout=30) as response:
        downloaded = response.read()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{recording_id}.webm"
    path.write_bytes(downloaded)
    try:
        got = probe(path)
    finally:
        path.unlink()
    assert got.frames["video"] >= 89 and got.frames["audio"] >= 149
    assert got.container_duration is not None and abs(got.container_duration - 3.0) < 0.1
