"""A private tapedeck stack for fault tests: its own Redis (AOF on) behind a reply-losing proxy, the Procfile's
`web` and `worker` processes, and S3 (moto) behind the HTTP fault proxy; plus an HTTP client that retries
503s and dropped connections the way the browser module does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fault_proxy import FaultProxy
from tests.media import Probe, probe
from tests.redis_proxy import RedisReplyProxy
from tests.procfile import procfile_command
from tests.services import ROOT, VENV_BIN, CeleryProcess, RedisServer, free_port, wait_until

JWT_SECRET = "fault-stack-secret-0123456789abcdef0123456789abcdef"
RETRY_AFTER_CAP_SECONDS = 0.5
"""The client honours Retry-After, capped so the tests stay quick."""
RETRY_FOR_SECONDS = 30.0



@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def call(method: str, url: str, token: str, data: bytes | None = None, headers: dict | None = None) -> Answer:
    """One HTTP request; a dropped connection is status 0."""
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, json.loads(response.read() or b"null"), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read() or b"null"), dict(error.headers))
    except (urllib.error.URLError, ConnectionError) as error:
        return Answer(0, {"error": str(error)})


def call_retrying(method: str, url: str, token: str, data: bytes | None = None, headers: dict | None = None,
                  answers: list[Answer] | None = None) -> Answer:
    """Retry 503 (honouring Retry-After) and dropped connections, like the browser module's queue."""
    deadline = time.monotonic() + RETRY_FOR_SECONDS
    while True:
        answer = call(method, url, token, data, headers)
        if answers is not None:
            answers.append(answer)
        if answer.status not in (0, 503) or time.monotonic() > deadline:
            return answer
        retry_after = float(answer.headers.get("Retry-After", "0.2"))
        time.sleep(min(retry_after, RETRY_AFTER_CAP_SECONDS))


@dataclass
class FaultStack:
    redis: RedisServer
    redis_proxy: RedisReplyProxy
    s3_proxy: FaultProxy
    s3: Any
    """A boto3 client straight to moto (not through the proxy), for inspecting the bucket."""
    bucket: str
    base: str
    web: subprocess.Popen
    worker: CeleryProcess
    env: dict[str, str]

    def token(self, room: str, sub: str = "host", role: str = "host") -> str:
        from app.auth import mint_token

        return mint_token(JWT_SECRET, room, sub, role)

    def start(self, room: str) -> str:
        answer = call_retrying("POST", f"{self.base}/video-calls/{room}/recording/start", self.token(room))
        assert answer.status == 201, answer
        return answer.body["recordingId"]

    def chunk_url(self, recording_id: str, participant: str, sequence: int, kind: str = "video") -> str:
        return f"{self.base}/video-calls/recordings/{recording_id}/participants/{participant}/{kind}/chunks/{sequence}"

    def put(self, room: str, recording_id: str, participant: str, sequence: int, data: bytes,
            retry: bool = True, answers: list[Answer] | None = None) -> Answer:
        send = call_retrying if retry else call
        kwargs = {"answers": answers} if retry else {}
        return send("PUT", self.chunk_url(recording_id, participant, sequence), self.token(room, participant, "participant"),
                    data, {"Content-Type": "application/octet-stream"}, **kwargs)

    def stop_and_wait(self, room: str, recording_id: str, timeout: float = 60) -> dict:
        answer = call_retrying("POST", f"{self.base}/video-calls/{room}/recording/stop", self.token(room))
        assert answer.status == 202, answer

        def final():
            body = call_retrying("GET", f"{self.base}/video-calls/recordings/{recording_id}", self.token(room)).body
            return body if body.get("state") in ("completed", "failed") else None

        return wait_until(final, timeout, interval=0.3, what=f"{recording_id} to finish")

    def status(self, room: str, recording_id: str) -> dict:
        return call_retrying("GET", f"{self.base}/video-calls/recordings/{recording_id}", self.token(room)).body

    def objects(self, room: str, recording_id: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"recordings/{room}/{recording_id}/")
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def probe_output(self, body: dict, participant: str) -> Probe:
        [output] = [o for o in body["outputs"] if o["participantId"] == participant]
        data = self.s3.get_object(Bucket=self.bucket, Key=output["key"])["Body"].read()
        assert len(data) == output["bytes"]
        with tempfile.NamedTemporaryFile(suffix=".webm") as handle:
            handle.write(data)
            handle.flush()
            return probe(Path(handle.name))

    def stop(self) -> None:
        self.worker.stop()
        os.killpg(self.web.pid, signal.SIGTERM)
        self.web.wait(15)
        self.redis_proxy.stop()
        self.s3_proxy.stop()
        self.redis.stop()


def start_fault_stack(directory: Path, s3_env: dict[str, str], s3_proxy: FaultProxy, s3: Any) -> FaultStack:
    """web and worker exactly as the Procfile runs them (bash -c, programs from PATH), on a private Redis."""
    redis = RedisServer(directory / "redis", appendonly=True)
    redis_proxy = RedisReplyProxy(redis.port).start()
    port = free_port()
    env = {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
        **s3_env, "S3_ENDPOINT_URL": s3_proxy.url, "AWS_MAX_ATTEMPTS": "1",
        "PORT": str(port), "TAPEDECK_ENV": "production", "JWT_SECRET": JWT_SECRET,
        "STAGING_DIR": str(directory / "staging"), "FINALIZE_GRACE_SECONDS": "1",
        "WEB_CONCURRENCY": "1", "WORKER_CONCURRENCY": "1", "FINALIZE_LOCK_SECONDS": "5",
        "UPLOAD_RETRY_BASE_SECONDS": "0.05", "UPLOAD_MAX_RETRIES": "5", "CHUNK_RATE_LIMIT": "100000/second",
        "CELERY_BEAT_SCHEDULE_FILE": str(directory / "beat-schedule"), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "GUNICORN_CMD_ARGS": "--no-control-socket",
    }
    with open(directory / "web.log", "wb") as web_log:
        web = subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT,
                               env={**env, "REDIS_URL": redis_proxy.url}, stdout=web_log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    worker = CeleryProcess({**env, "REDIS_URL": redis.url}, directory / "worker.log",
                           argv=["bash", "-c", procfile_command("worker")])
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: call("GET", f"{base}/healthz", "").status == 200 or web.poll() is not None, 30,
               what=f"web on {base}")
    assert web.poll() is None, (directory / "web.log").read_text()[-3000:]
    worker.wait_ready()
    return FaultStack(redis, redis_proxy, s3_proxy, s3, s3_env["S3_BUCKET"], base, web, worker, env)
