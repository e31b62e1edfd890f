"""Idle event streams against the Procfile's `web` line: /healthz and chunk-upload latency with 0, 80 and 300
open SSE streams, under the gevent worker the Procfile uses and under the gthread worker it replaced (same
command with `--worker-class gthread --threads 16` appended), so the choice of worker class is a measured one.

    .venv/bin/python -m bench.streams_bench            # 0, 80, 300 streams, both worker classes
    .venv/bin/python -m bench.streams_bench --streams 0 80 --requests 100
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.auth import mint_token
from tests.media import Recording, encode_webm
from tests.services import ROOT, VENV_BIN, RedisServer, free_port, wait_until

OUT = ROOT / "bench" / "out" / "streams"
"""Redis, staging and gunicorn logs of the run (gitignored), deleted at the end."""
SECRET = "streams-bench-secret-0123456789abcdef0123456789"
GTHREAD = "--worker-class gthread --threads 16"
"""Appended to the Procfile line (the later option wins): the worker class web used before."""
TIMEOUT = 5.0
"""A request slower than this counts as an error (a frozen API), and three in a row end that measurement."""
STREAMS_PER_RECORDING = 60
"""Under MAX_EVENT_STREAMS_PER_RECORDING (64), four per token (MAX_EVENT_STREAMS_PER_TOKEN)."""


@dataclass
class Cell:
    """Latencies of one kind of request in one configuration; errors are timeouts and non-2xx answers."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


@dataclass
class Result:
    worker: str
    streams: int
    served: int
    healthz: Cell
    upload: Cell
    uploads_per_second: float


class Web:
    """`bash -c "<web line>"` with PATH, HOME and documented variables only, on its own port."""

    def __init__(self, line: str, redis_url: str, directory: Path) -> None:
        self.port = free_port()
        env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": os.environ.get("HOME", "/root"),
               "PORT": str(self.port), "REDIS_URL": redis_url, "JWT_SECRET": SECRET, "TAPEDECK_ENV": "production",
               "STAGING_DIR": str(directory / "staging"), "LOCAL_STORAGE_DIR": str(directory / "recordings"),
               "STORAGE_PROVIDER": "local", "CHUNK_RATE_LIMIT": "100000/second", "MAX_PARTICIPANTS": "1000",
               "GUNICORN_CMD_ARGS": "--no-control-socket"}
        self.log = open(directory / f"web-{self.port}.log", "ab")
        self.process = subprocess.Popen(["bash", "-c", line], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or self.call("GET", "/healthz", timeout=1)[0] == 200,
                   60, interval=0.2, what="gunicorn")
        assert self.process.poll() is None, (directory / f"web-{self.port}.log").read_text()[-2000:]

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = TIMEOUT) -> tuple[int, float]:
        """(status, seconds); status 0 when it timed out or the connection failed."""
        began = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response.status, time.perf_counter() - began
        except OSError:
            return 0, time.perf_counter() - began
        finally:
            conn.close()

    def stop(self) -> None:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def start_recording(web: Web, room: str) -> str:
    import json

    token = mint_token(SECRET, room, "host", "host")
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    conn.request("POST", f"/video-calls/{room}/recording/start", headers={"Authorization": f"Bearer {token}"})
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body["recordingId"]


def open_streams(web: Web, count: int, run: str) -> tuple[list[socket.socket], int]:
    """Opens `count` idle streams (4 per token, 60 per recording); returns them and how many were answered."""
    sockets: list[socket.socket] = []
    rooms = [f"{run}-watch{n}" for n in range(-(-count // STREAMS_PER_RECORDING))]
    recordings = [start_recording(web, room) for room in rooms]  # before any stream: gthread may freeze
    for index in range(count):
        room, recording_id = rooms[index // STREAMS_PER_RECORDING], recordings[index // STREAMS_PER_RECORDING]
        token = mint_token(SECRET, room, f"viewer{index // 4}", "participant")
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=TIMEOUT)
        sock.sendall(f"GET /video-calls/recordings/{recording_id}/events?token={token} HTTP/1.1\r\n"
                     f"Host: 127.0.0.1\r\n\r\n".encode())
        sockets.append(sock)
    deadline = time.monotonic() + 3 * TIMEOUT
    served = 0
    for sock in sockets:  # a stream is served once its first bytes (status line, retry:) arrive
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            served += sock.recv(4096).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
    return sockets, served


def measure(web: Web, requests: int, header: bytes, run: str, recording_id: str) -> tuple[Cell, Cell]:
    """Sequential /healthz calls, then sequential 64 KB chunk PUTs from one participant."""
    healthz, upload = Cell(), Cell()
    room = f"{run}-upload"
    headers = {"Authorization": f"Bearer {mint_token(SECRET, room, 'alice', 'participant')}",
               "Content-Type": "application/octet-stream"}
    body = os.urandom(64 * 1024)
    for cell, call in ((healthz, lambda i: web.call("GET", "/healthz")),
                       (upload, lambda i: web.call("PUT", f"/video-calls/recordings/{recording_id}/participants/"
                                                          f"alice/video/chunks/{i}", header if i == 0 else body, headers))):
        streak = 0
        for i in range(requests):
            status, seconds = call(i)
            if 200 <= status < 300:
                cell.latencies.append(seconds)
                streak = 0
            else:
                cell.errors += 1
                streak += 1
                if streak >= 3:  # frozen: do not wait TIMEOUT for every remaining request
                    cell.errors += requests - i - 1
                    break
    return healthz, upload


def concurrent_uploads(web: Web, clients: int, seconds: float, header: bytes, run: str, recording_id: str) -> float:
    """Chunks per second from `clients` participants uploading at once (fsync and Redis under contention)."""
    room = f"{run}-many"
    body = os.urandom(64 * 1024)
    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def participant(n: int) -> None:
        headers = {"Authorization": f"Bearer {mint_token(SECRET, room, f'p{n}', 'participant')}",
                   "Content-Type": "application/octet-stream"}
        sequence = 0
        while time.monotonic() < stop_at:
            path = f"/video-calls/recordings/{recording_id}/participants/p{n}/video/chunks/{sequence}"
            status, _ = web.call("PUT", path, header if sequence == 0 else body, headers)
            if status == 202:
                done[n] += 1
                sequence += 1
            elif status == 0:
                return

    threads = [threading.Thread(target=participant, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def procfile_web() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit("Procfile has no web process")


def run_worker(name: str, line: str, redis_url: str, args: argparse.Namespace, header: bytes) -> list[Result]:
    web = Web(line, redis_url, OUT)
    results = []
    try:
        measure(web, 20, header, f"{name}-warmup-{int(time.time())}", start_recording(web, f"{name}-warmup"))
        for count in args.streams:
            run = f"{name}{count}-{int(time.time())}"
            upload_to = start_recording(web, f"{run}-upload"), start_recording(web, f"{run}-many")
            sockets, served = open_streams(web, count, run)
            try:
                healthz, upload = measure(web, args.requests, header, run, upload_to[0])
                frozen = healthz.errors == args.requests
                rate = 0.0 if frozen else concurrent_uploads(web, args.clients, args.seconds, header, run, upload_to[1])
            finally:
                for sock in sockets:
                    sock.close()
            results.append(Result(name, count, served, healthz, upload, rate))
            print(f"  {name:8} {count:4} streams: served {served}, healthz p50 {healthz.pct(0.5):.1f} ms "
                  f"({healthz.errors} errors), upload p50 {upload.pct(0.5):.1f} ms, {rate:.0f} uploads/s", flush=True)
            time.sleep(TIMEOUT * 2 if count else 0)  # let closed streams be noticed (a keep-alive or two)
    finally:
        web.stop()
    return results


def _ms(cell: Cell, q: float) -> str:
    return "timeout" if not cell.latencies else f"{cell.pct(q):.1f}"


def _ratio(a: Cell, b: Cell, q: float) -> str:
    if not a.latencies or not b.latencies:
        return "frozen" if not a.latencies else "-"
    return f"{a.pct(q) / b.pct(q):.2f}x"


def print_table(results: list[Result], clients: int) -> None:
    print(f"\n{'worker':8} {'streams':>7} {'served':>6} | {'healthz p50':>11} {'p99':>7} {'err':>4} | "
          f"{'upload p50':>10} {'p99':>7} {'err':>4} | {f'uploads/s ({clients} clients)':>22}")
    for r in results:
        print(f"{r.worker:8} {r.streams:>7} {r.served:>6} | {_ms(r.healthz, .5):>11} {_ms(r.healthz, .99):>7} "
              f"{r.healthz.errors:>4} | {_ms(r.upload, .5):>10} {_ms(r.upload, .99):>7} {r.upload.errors:>4} | "
              f"{r.uploads_per_second:>22.0f}")
    by = {(r.worker, r.streams): r for r in results}
    print("\nratios (gthread ÷ gevent; above 1: gthread slower; 'frozen': gthread never answered)")
    print(f"{'streams':>7} | {'healthz p50':>11} {'p99':>7} | {'upload p50':>10} {'p99':>7} | {'uploads/s':>9}")
    for count in sorted({r.streams for r in results}):
        a, b = by.get(("gthread", count)), by.get(("gevent", count))
        if a and b:
            rate = f"{a.uploads_per_second / b.uploads_per_second:.2f}x" if b.uploads_per_second else "-"
            print(f"{count:>7} | {_ratio(a.healthz, b.healthz, .5):>11} {_ratio(a.healthz, b.healthz, .99):>7} | "
                  f"{_ratio(a.upload, b.upload, .5):>10} {_ratio(a.upload, b.upload, .99):>7} | {rate:>9}")
    base = {w: by.get((w, 0)) for w in ("gevent", "gthread")}
    print("\nwith streams ÷ without (same worker class)")
    for r in results:
        zero = base.get(r.worker)
        if r.streams and zero:
            print(f"{r.worker:8} {r.streams:>4} streams: healthz p50 {_ratio(r.healthz, zero.healthz, .5)}, "
                  f"upload p50 {_ratio(r.upload, zero.upload, .5)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[0, 80, 300])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per kind and setting")
    parser.add_argument("--clients", type=int, default=16, help="participants uploading at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the concurrent upload window")
    parser.add_argument("--workers", nargs="+", default=["gevent", "gthread"], choices=["gevent", "gthread"])
    args = parser.parse_args()
    line = procfile_web()
    lines = {"gevent": line, "gthread": f"{line} {GTHREAD}"}
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    redis_server = RedisServer(OUT / "redis", appendonly=True)
    header = encode_webm(Recording(seconds=1.0))[:4096]
    results: list[Result] = []
    try:
        print(f"web line: {line}")
        for name in args.workers:
            results += run_worker(name, lines[name], redis_server.url, args, header)
    finally:
        redis_server.stop()
        shutil.rmtree(OUT, ignore_errors=True)
    print_table(results, args.clients)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores: above 2, other jobs share the machine)")


if __name__ == "__main__":
    main()
