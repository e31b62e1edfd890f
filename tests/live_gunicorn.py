"""Pytest plugin: the Procfile's real `web` line run under gunicorn, as honcho or a buildpack would run it.

Register with `pytest_plugins = ["tests.live_gunicorn"]`. The line runs with `bash -c` from the repo root
with only PATH, HOME and documented variables (the session's stack_env, its own PORT and Redis), plus
GUNICORN_CMD_ARGS=--no-control-socket so it never takes over another gunicorn's control socket.
`live_gunicorn.log_text()` is everything it printed (access log included).
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.procfile import procfile_command
from tests.services import ROOT, VENV_BIN, free_port, wait_until



@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class OpenStream:
    """A raw event-stream connection, kept open by the test (no thread per stream on the client side either)."""

    sock: socket.socket
    status: int
    headers: dict[str, str]
    buffered: bytes = b""

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        self.sock.settimeout(timeout)
        while marker not in self.buffered:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"stream closed before {marker!r}: {self.buffered[-300:]!r}")
            self.buffered += data
        return self.buffered

    def close(self) -> None:
        self.sock.close()


@dataclass
class LiveGunicorn:
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 30) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def open_stream(self, path: str, timeout: float = 30) -> OpenStream:
        """GET an event stream and return once its status line and headers are in."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        stream = OpenStream(sock, 0, {})
        head, _, stream.buffered = stream.read_until(b"\r\n\r\n", timeout).partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        stream.status = int(status_line.split()[1])
        stream.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return stream

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@contextmanager
def web_line(stack_env: dict[str, str], log_dir: Path, name: str = "gunicorn",
             **extra_env: str) -> Iterator[LiveGunicorn]:
    """The Procfile's web line on a free port with stack_env plus extra_env, answering /healthz; stopped on exit."""
    port = free_port()
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
           "HOME": os.environ.get("HOME", "/root"), **stack_env, "PORT": str(port),
           "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "GUNICORN_CMD_ARGS": "--no-control-socket", **extra_env}
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveGunicorn(port, log_path, process)
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), 60, what="gunicorn web")
        assert process.poll() is None, server.log_text()[-3000:]
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def live_gunicorn(stack_env, tmp_root) -> Iterator[LiveGunicorn]:
    """`bash -c "<Procfile web line>"` on a free port against the session's Redis; stopped at the end."""
    with web_line(stack_env, tmp_root) as server:
        yield server


def _stop(process: subprocess.Popen) -> None:
    """SIGINT is gunicorn's quick shutdown (open streams would hold a graceful one up to 30 s)."""
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
