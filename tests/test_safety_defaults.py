"""Safe by default: a copied .env.example is production, Flower needs auth in production, Redis must persist,
and download links come from one public base URL whatever a process's own PORT is."""
from __future__ import annotations

import base64
import logging
import subprocess

import pytest
import redis
from dotenv import dotenv_values

from scripts import run as make_run
from tests.conftest import JWT_SECRET
from tests.procfile import answers, http, minimal_env, procfile_command
from tests.services import ROOT, CeleryProcess, RedisServer, free_port, wait_until
from workers.errors import ConfigurationError
from workers.redis_persistence import Persistence, check_persistence
from workers.settings import Settings

pytestmark = pytest.mark.timeout(180)


# --- .env.example and make run's defaults (items 5, 11) ------------------------------------------

def test_a_copied_env_example_is_production_and_has_no_dev_token_route(stack_env):
    from app import create_app

    example = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    assert example.get("TAPEDECK_ENV", "") in ("", "production")
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        Settings.from_env(example)  # production: no built-in secret
    config = {**example, "JWT_SECRET": JWT_SECRET, "REDIS_URL": stack_env["REDIS_URL"],
              "REDIS_ALLOW_NO_PERSISTENCE": "true", "STAGING_DIR": stack_env["STAGING_DIR"],
              "LOCAL_STORAGE_DIR": stack_env["LOCAL_STORAGE_DIR"]}
    app = create_app(config)
    assert not app.extensions["tapedeck"].settings.development
    response = app.test_client().post("/dev/token", json={"room": "r", "sub": "mallory", "role": "host"})
    assert response.status_code == 404


def test_make_run_is_development_on_loopback_and_production_binds_as_configured():
    dev = make_run.with_defaults({})
    assert (dev["TAPEDECK_ENV"], dev["BIND_HOST"], dev["PORT"]) == ("development", "127.0.0.1", "8000")
    assert dev["PUBLIC_BASE_URL"] == "http://localhost:8000"
    assert make_run.honcho_argv(dev, [])[-2:] == ["--port", "8000"]  # web, the first line, gets 8000
    prod = make_run.with_defaults({"TAPEDECK_ENV": "production", "PORT": "9000"})
    assert "BIND_HOST" not in prod and prod["PUBLIC_BASE_URL"] == "http://localhost:9000"
    assert make_run.with_defaults({"TAPEDECK_ENV": "production", "BIND_HOST": "10.0.0.5"})["BIND_HOST"] == "10.0.0.5"


def test_the_shell_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("PORT=9100\nTAPEDECK_ENV=\nREDIS_URL=redis://127.0.0.1:1/0\n")
    merged = make_run.with_defaults(make_run.merged_env({"PORT": "9200"}, str(env_file)))
    assert merged["PORT"] == "9200" and merged["REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert merged["TAPEDECK_ENV"] == "development"


def test_download_links_never_come_from_a_process_port(tmp_path):
    from storage_providers.local import LocalSettings

    worker_env = {"PORT": "5100", "JWT_SECRET": "s", "LOCAL_STORAGE_DIR": str(tmp_path)}  # honcho's worker PORT
    assert LocalSettings.from_env(worker_env).public_base_url == "http://localhost:8000"
    configured = {**worker_env, "PUBLIC_BASE_URL": "https://rec.example.com/"}
    assert LocalSettings.from_env(configured).public_base_url == "https://rec.example.com"


# --- Flower (item 6) ----------------------------------------------------------------------------

def _flower(tmp_path, redis_url: str, **variables: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = minimal_env(tmp_path, REDIS_URL=redis_url, FLOWER_PORT=str(port), **variables)
    process = subprocess.Popen(["bash", "-c", procfile_command("flower")], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    return process, port


@pytest.mark.parametrize("extra", [{}, {"FLOWER_UNAUTHENTICATED_API": "true"}, {"FLOWER_BASIC_AUTH": "admin:"},
                                   {"FLOWER_AUTH": ".*@example\\.com", "FLOWER_OAUTH2_KEY": "k"}])
def test_production_flower_refuses_to_start_without_auth(tmp_path, redis_server, extra):
    process, port = _flower(tmp_path, redis_server.url, **extra)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"refusing to start in production without authentication" in stderr
    assert b"FLOWER_BASIC_AUTH" in stderr


def test_production_flower_with_basic_auth_serves_its_api_only_to_credentials(tmp_path, redis_server):
    process, port = _flower(tmp_path, redis_server.url, FLOWER_BASIC_AUTH="admin:s3cret")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: process.poll() is not None or answers(f"{base}/healthcheck"), 60, what="flower")
        assert process.poll() is None, process.stderr.read().decode(errors="replace")
        assert http("GET", f"{base}/api/tasks")[0] == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:guess").decode()}
        assert http("GET", f"{base}/api/tasks", headers=wrong)[0] == 401
        right = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        assert http("GET", f"{base}/api/tasks", headers=right)[0] == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)


# --- Redis persistence (item 8) ------------------------------------------------------------------

@pytest.fixture
def persistent_redis(tmp_path):
    server = RedisServer(tmp_path / "aof", appendonly=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def volatile_redis(tmp_path_factory):
    """A Redis that persists nothing (the session's own one runs with appendonly, as production must)."""
    server = RedisServer(tmp_path_factory.mktemp("volatile-redis"))
    yield server
    server.stop()


def _production(stack_env, redis_url: str, **extra: str) -> dict[str, str]:
    return {**stack_env, "TAPEDECK_ENV": "production", "REDIS_URL": redis_url, **extra}


def test_persistence_verdicts(volatile_redis, persistent_redis):
    assert check_persistence(redis.Redis.from_url(volatile_redis.url)).persistence is Persistence.NONE
    client = redis.Redis.from_url(persistent_redis.url)
    assert check_persistence(client).persistence is Persistence.PERSISTENT
    client.config_set("appendonly", "no")
    client.config_set("save", "60 1")
    assert check_persistence(client).persistence is Persistence.PERSISTENT  # RDB snapshots count
    client.config_set("save", "")
    assert check_persistence(client).persistence is Persistence.NONE


def test_production_web_refuses_a_redis_that_persists_nothing(stack_env, volatile_redis):
    from app import create_app

    with pytest.raises(ConfigurationError, match="REDIS_ALLOW_NO_PERSISTENCE"):
        create_app(_production(stack_env, volatile_redis.url))
    allowed = create_app(_production(stack_env, volatile_redis.url, REDIS_ALLOW_NO_PERSISTENCE="true")).test_client()
    ready = allowed.get("/readyz")
    assert ready.status_code == 200 and "persists nothing" in ready.get_json()["warnings"][0]


def test_development_only_warns(stack_env, volatile_redis, caplog):
    from app import create_app

    with caplog.at_level(logging.WARNING, logger="tapedeck.startup"):
        app = create_app({**stack_env, "REDIS_URL": volatile_redis.url})
    assert "persists nothing" in caplog.text
    assert app.test_client().get("/readyz").status_code == 200


def test_readyz_turns_503_when_persistence_is_switched_off(stack_env, persistent_redis):
    from app import create_app

    client = create_app(_production(stack_env, persistent_redis.url)).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "warnings" not in ready.get_json()
    redis.Redis.from_url(persistent_redis.url).config_set("appendonly", "no")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["error"]["code"] == "unavailable" and body["checks"]["redis"] == "not_persistent"


def test_a_redis_that_refuses_config_is_logged_and_allowed(stack_env, redis_server, caplog):
    from app import create_app

    admin = redis.Redis.from_url(redis_server.url)
    admin.acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-config"])
    url = redis_server.url.replace("redis://", "redis://noconfig:pw@")
    with caplog.at_level(logging.WARNING, logger="tapedeck.startup"):
        client = create_app(_production(stack_env, url)).test_client()
    assert "cannot be verified" in caplog.text
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "cannot be verified" in ready.get_json()["warnings"][0]


def test_production_worker_refuses_a_redis_that_persists_nothing(tmp_path):
    own = RedisServer(tmp_path / "volatile")  # its own queue: the session worker's tasks stay where they are
    env = minimal_env(tmp_path, REDIS_URL=own.url, JWT_SECRET=JWT_SECRET,
                      CELERY_BEAT_SCHEDULE_FILE=str(tmp_path / "beat"), STAGING_DIR=str(tmp_path / "staging"),
                      LOCAL_STORAGE_DIR=str(tmp_path / "recordings"), WORKER_CONCURRENCY="1")
    try:
        refused = CeleryProcess(env, tmp_path / "worker.log", argv=["bash", "-c", procfile_command("worker")])
        assert refused.process.wait(90) != 0
        assert "persists nothing" in refused.tail()
        allowed = CeleryProcess({**env, "REDIS_ALLOW_NO_PERSISTENCE": "true"}, tmp_path / "allowed.log",
                                argv=["bash", "-c", procfile_command("worker")])
        try:
            allowed.wait_ready(90)
        finally:
            allowed.stop()
    finally:
        own.stop()
