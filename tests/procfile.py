"""Helpers for tests that run Procfile lines and `make run` as an operator would: by command, over real sockets."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.services import ROOT, VENV_BIN, wait_until

BASE_PATH = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
"""PATH of the activated environment: Procfile lines call gunicorn, celery and python by name."""


def procfile_command(name: str) -> str:
    """The command of one Procfile process, as honcho would hand it to a shell."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"Procfile has no {name} process")


def minimal_env(home: Path, **variables: str) -> dict[str, str]:
    """Only PATH, HOME and documented variables; GUNICORN_CMD_ARGS keeps gunicorn 27 off ~/.gunicorn/gunicorn.ctl."""
    return {"PATH": BASE_PATH, "HOME": str(home), "GUNICORN_CMD_ARGS": "--no-control-socket", **variables}


def start_web(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """The Procfile's `web` line in a session of its own (a signal reaches gunicorn and its workers), output appended
    to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_web(web: subprocess.Popen, port: int, log_path: Path) -> None:
    """Until /healthz answers; a web line that exits first fails the test with the end of its log."""
    wait_until(lambda: web.poll() is not None or answers(f"http://127.0.0.1:{port}/healthz"), 60, what="web")
    assert web.poll() is None, log_path.read_text()[-3000:]


def stop_web(web: subprocess.Popen, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGKILL),
             wait: float = 15) -> None:
    """Each signal in turn to the web line's session, until it has exited (SIGINT is gunicorn's quick shutdown)."""
    for sig in signals:
        if web.poll() is None:
            os.killpg(web.pid, sig)
            try:
                web.wait(wait)
            except subprocess.TimeoutExpired:
                continue


def http(method: str, url: str, token: str | None = None, data: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of one request (HTTP errors are answers, not exceptions)."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=data, method=method, headers={**auth, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def http_json(method: str, url: str, token: str | None = None, **kwargs) -> tuple[int, object]:
    status, body, _ = http(method, url, token, **kwargs)
    return status, json.loads(body or b"null")


def answers(url: str, expect: int = 200) -> bool:
    try:
        return http("GET", url, timeout=3)[0] == expect
    except OSError:
        return False


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, read from /proc (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    if width == 8:
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return {"0" * 32: "::", "0" * 24 + "01000000": "::1"}.get(hex_address, hex_address)


def honcho_children(log_text: str) -> list[int]:
    """Pids honcho reports starting ("web.1 started (pid=123)"); each leads its own session."""
    return [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", log_text)]


def kill_session(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
