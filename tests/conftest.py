"""Session-scoped real parts (Redis, a Celery worker) shared by every test; each test uses its own room."""
from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.services import CeleryProcess, RedisServer, wait_until

pytest_plugins = ["tests.storage_servers", "tests.live_server", "tests.live_gunicorn", "tests.browser"]

GRACE_SECONDS = "1"
JWT_SECRET = "test-secret-for-tapedeck-tests-0123456789abcdef"


def pytest_addoption(parser):
    parser.addoption("--staging-backend", choices=("local", "object-store"),
                     default=os.environ.get("TAPEDECK_TEST_STAGING_BACKEND", "local"),
                     help="STAGING_BACKEND of the session's stack; object-store stages chunks and stores outputs "
                          "in the moto S3 server (env: TAPEDECK_TEST_STAGING_BACKEND)")


@pytest.fixture(scope="session")
def staging_backend(request) -> str:
    return request.config.getoption("--staging-backend")


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tapedeck")


@pytest.fixture(scope="session")
def redis_server(tmp_root):
    server = RedisServer(tmp_root / "redis", appendonly=True)  # production refuses a Redis that persists nothing
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_env(redis_server, tmp_root, staging_backend, request) -> dict[str, str]:
    """The environment every tapedeck process of the session shares (web app in-process, worker outside)."""
    env = {
        "TAPEDECK_ENV": "development",
        "JWT_SECRET": JWT_SECRET,
        "REDIS_URL": redis_server.url,
        "STAGING_DIR": str(tmp_root / "staging"),
        "LOCAL_STORAGE_DIR": str(tmp_root / "recordings"),
        "STORAGE_PROVIDER": "local",
        "FINALIZE_GRACE_SECONDS": GRACE_SECONDS,
        "STAGING_MIN_FREE_BYTES": str(16 * 1024 * 1024),
        "UPLOAD_RETRY_BASE_SECONDS": "0.05",
        "FINALIZE_LOCK_SECONDS": "5",
        "RECOVER_EVERY_SECONDS": "1",
        "CELERY_BEAT_SCHEDULE_FILE": str(tmp_root / "celerybeat-schedule"),
        "PUBLIC_BASE_URL": "http://localhost",
        "RTC_HOST_ADDRESSES": "127.0.0.1",  # WebRTC peers gather on loopback only (aioice skips it by default)
    }
    if staging_backend == "object-store":  # chunks and outputs in one bucket, as a scaled-out deployment has them
        env.update(request.getfixturevalue("moto_server"), STAGING_BACKEND="object-store", S3_PREFIX="stack")
    os.environ.update(env)
    from tasks import celery_app

    celery_app.conf.update(broker_url=env["REDIS_URL"], result_backend=env["REDIS_URL"])
    return env


@pytest.fixture(scope="session")
def worker(stack_env, tmp_root):
    """One real `celery worker` process for the session."""
    proc = CeleryProcess({**os.environ, **stack_env}, tmp_root / "worker.log")
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def app(stack_env):
    from app import create_app

    return create_app(stack_env)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(client, app, room):
    return Api(client, app, room)


class Api:
    """A client of the HTTP API, as a web app backend and its browsers would use it."""

    def __init__(self, client, app, room: str) -> None:
        self.client, self.app, self.room = client, app, room

    def token(self, sub: str = "host", role: str = "host", room: str | None = None, ttl: int = 600) -> str:
        from app.auth import mint_token

        return mint_token(JWT_SECRET, room or self.room, sub, role, ttl)

    def auth(self, sub: str = "host", role: str = "host", room: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role, room)}"}

    def start(self, **body):
        return self.client.post(f"/video-calls/{self.room}/recording/start", json=body or None, headers=self.auth())

    def stop(self):
        return self.client.post(f"/video-calls/{self.room}/recording/stop", headers=self.auth())

    def status(self, recording_id: str):
        return self.client.get(f"/video-calls/recordings/{recording_id}", headers=self.auth())

    def post_chunk(self, recording_id: str, participant: str, kind: str, sequence: int, data: bytes,
                   timestamp: float | None = None, role: str = "participant"):
        body = {"recordingId": recording_id, "participantId": participant, "type": kind, "sequence": sequence,
                "chunk": base64.b64encode(data).decode()}
        if timestamp is not None:
            body["timestamp"] = timestamp
        return self.client.post("/video-calls/chunks/upload", json=body, headers=self.auth(participant, role))

    def put_chunk(self, recording_id: str, participant: str, kind: str, sequence: int, data: bytes,
                  timestamp: float | None = None):
        headers = {**self.auth(participant, "participant"), "Content-Type": "application/octet-stream"}
        if timestamp is not None:
            headers["Tapedeck-Timestamp"] = str(timestamp)
        url = f"/video-calls/recordings/{recording_id}/participants/{participant}/{kind}/chunks/{sequence}"
        return self.client.put(url, data=data, headers=headers)

    def wait_final(self, recording_id: str, timeout: float = 60) -> dict:
        def final():
            body = self.status(recording_id).get_json()
            return body if body["state"] in ("completed", "failed") else None

        return wait_until(final, timeout, interval=0.2, what=f"{recording_id} to finish")

    def output_path(self, body: dict, participant: str) -> Path:
        output = next(o for o in body["outputs"] if o["participantId"] == participant)
        return self.stored(output["key"])

    def manifest(self, body: dict) -> dict:
        import json

        return json.loads(self.stored(f"recordings/{body['room']}/{body['recordingId']}/manifest.json").read_text())

    @staticmethod
    def stored_names(body: dict) -> list[str]:
        """Names of every object stored under the recording's prefix (directory or bucket)."""
        prefix = f"recordings/{body['room']}/{body['recordingId']}/"
        if os.environ.get("STORAGE_PROVIDER") == "s3":
            from storage_providers import create_provider

            return sorted(info.key.removeprefix(prefix) for info in create_provider(env=dict(os.environ)).list(prefix))
        return sorted(p.name for p in (Path(os.environ["LOCAL_STORAGE_DIR"]) / prefix).iterdir())

    @staticmethod
    def stored(key: str) -> Path:
        """A stored object as a local file (downloaded from the bucket when the stack stores in S3)."""
        path = Path(os.environ["LOCAL_STORAGE_DIR"]) / key
        if os.environ.get("STORAGE_PROVIDER") == "s3":
            from tests.storage_servers import s3_client

            path.parent.mkdir(parents=True, exist_ok=True)
            prefix = os.environ.get("S3_PREFIX", "").strip("/")
            s3_client(os.environ).download_file(os.environ["S3_BUCKET"], f"{prefix}/{key}" if prefix else key, str(path))
        return path


@pytest.fixture
def private_redis(stack_env):
    """Database 11 of the session's Redis, which no worker or app uses, emptied around the test."""
    import redis

    client = redis.Redis.from_url(stack_env["REDIS_URL"].rsplit("/", 1)[0] + "/11")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def now_ms() -> float:
    return time.time() * 1000


@pytest.fixture
def rec(api) -> str:
    """A started recording's id in the test's own room."""
    response = api.start()
    assert response.status_code == 201
    return response.get_json()["recordingId"]
