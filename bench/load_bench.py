"""Chunk intake under load: 50 concurrent participants PUT 64 KB chunks against the Procfile's `web` process,
and, in the same run with the same gunicorn settings, against the floor of any durable intake
(bench/floor_app.py: fsync + one HSET), so tapedeck's cost shows up as a ratio, not as a number without a
reference. Loopback only; each side runs for --seconds after a short warm-up."""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from bench.load_client import Tally, Target, drive, make_bodies
from bench.load_measure import CpuWindow
from tests.media import Recording, encode_webm
from tests.services import ROOT, VENV_BIN, RedisServer, free_port, wait_until

OUT = ROOT / "bench" / "out" / "load"
"""Staging, logs and Redis of the run (gitignored); staged chunks are deleted after each side."""
JWT_SECRET = "load-bench-secret-0123456789abcdef0123456789abcdef"
ROOM = "loadbench"
APP_SPEC = re.compile(r"""(['"]?)app:create_app\(\)\1""")
FLOOR_SPEC = "'bench.floor_app:create_app()'"


@dataclass(frozen=True)
class Side:
    """One measured server: its throughput, latency, errors and CPU over the window."""

    name: str
    seconds: float
    ok: int
    latencies: list[float]
    errors: dict[str, int]
    web_cpu: float
    redis_cpu: float
    client_cpu: float
    redis_commands: int
    command_calls: dict[str, int]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def procfile_web() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit("Procfile has no web process")


def floor_line(line: str) -> str:
    """The same gunicorn command serving the floor app instead of tapedeck."""
    swapped, count = APP_SPEC.subn(FLOOR_SPEC, line)
    if count != 1:
        raise SystemExit(f"cannot find the app spec 'app:create_app()' in the Procfile's web line: {line}")
    return swapped


def web_env(port: int, redis_url: str, staging: Path, rate_limit: str) -> dict[str, str]:
    """PATH, HOME and documented variables only (plus gunicorn's own GUNICORN_CMD_ARGS)."""
    return {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port), "TAPEDECK_ENV": "production", "JWT_SECRET": JWT_SECRET, "REDIS_URL": redis_url,
        "STAGING_DIR": str(staging), "STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(OUT / "recordings"),
        "REDIS_ALLOW_NO_PERSISTENCE": "true", "CHUNK_RATE_LIMIT": rate_limit, "MAX_PARTICIPANTS": "1000",
        "GUNICORN_CMD_ARGS": "--no-control-socket",
    }


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run_side(name: str, command: str, redis_server: RedisServer, args: argparse.Namespace,
             first: bytes, bodies: list[bytes]) -> Side:
    """Start one gunicorn, load it for warm-up + seconds, stop it, delete what it staged."""
    staging, port = OUT / f"{name}-staging", free_port()
    shutil.rmtree(staging, ignore_errors=True)
    env = web_env(port, redis_server.url, staging, args.rate_limit)
    if name == "floorpool":
        env["FLOOR_DISK_IN_POOL"] = "true"
    with open(OUT / f"{name}-web.log", "wb") as log:
        web = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz") or web.poll() is not None, 60,
                   what=f"{name} web")
        if web.poll() is not None:
            raise SystemExit(f"{name} web exited: {(OUT / f'{name}-web.log').read_text()[-3000:]}")
        target = _target(name, port)
        client = redis.Redis.from_url(redis_server.url)
        window = CpuWindow(psutil.Process(web.pid), psutil.Process(redis_server.process.pid), client)
        sampler = window.schedule(args.warmup, args.seconds)
        participants = [f"p{i:02d}" for i in range(args.participants)]
        tallies = drive(target, participants, first, bodies, args.warmup, args.seconds)
        sampler.join()
        return _side(name, args.seconds, tallies, window.deltas(), window.command_deltas())
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(30)
        shutil.rmtree(staging, ignore_errors=True)


def _target(name: str, port: int) -> Target:
    """tapedeck: a real recording and a participant token each; the floor takes anything."""
    if name.startswith("floor"):
        return Target("127.0.0.1", port, "rec_floor", lambda participant: {})
    from app.auth import mint_token

    room = f"{ROOM}-{uuid.uuid4().hex[:8]}"
    host = mint_token(JWT_SECRET, room, "host", "host", 3600)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/video-calls/{room}/recording/start", method="POST",
                                     headers={"Authorization": f"Bearer {host}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        recording_id = json.loads(response.read())["recordingId"]
    tokens: dict[str, str] = {}

    def headers_for(participant: str) -> dict[str, str]:
        token = tokens.setdefault(participant, mint_token(JWT_SECRET, room, participant, "participant", 3600))
        return {"Authorization": f"Bearer {token}"}

    return Target("127.0.0.1", port, recording_id, headers_for)


def _side(name: str, seconds: float, tallies: list[Tally], cpu: tuple[float, float, float, int],
          command_calls: dict[str, int]) -> Side:
    latencies = [x for t in tallies for x in t.latencies]
    statuses: dict[str, int] = {}
    for tally in tallies:
        for status, count in tally.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    ok = statuses.pop("202", 0)
    web_cpu, redis_cpu, client_cpu, commands = cpu
    return Side(name, seconds, ok, latencies, statuses, web_cpu, redis_cpu, client_cpu, commands, command_calls)


def schedule(names: list[str], rounds: int) -> list[str]:
    """Sides in mirrored rounds (A B, B A, A B, …) so a drift in the machine's load hits both alike."""
    order: list[str] = []
    for index in range(rounds):
        order += names if index % 2 == 0 else names[::-1]
    return order


def combine(runs: list[Side]) -> list[Side]:
    """One Side per name, summing the rounds (rates over the summed seconds, latencies pooled)."""
    merged: dict[str, Side] = {}
    for run in runs:
        if run.name not in merged:
            merged[run.name] = run
            continue
        old = merged[run.name]
        errors = {k: old.errors.get(k, 0) + run.errors.get(k, 0) for k in {*old.errors, *run.errors}}
        calls = {k: old.command_calls.get(k, 0) + run.command_calls.get(k, 0) for k in {*old.command_calls, *run.command_calls}}
        merged[run.name] = Side(run.name, old.seconds + run.seconds, old.ok + run.ok, old.latencies + run.latencies,
                                errors, old.web_cpu + run.web_cpu, old.redis_cpu + run.redis_cpu,
                                old.client_cpu + run.client_cpu, old.redis_commands + run.redis_commands,
                                dict(sorted(calls.items(), key=lambda kv: -kv[1])))
    return list(merged.values())


def print_report(sides: list[Side], args: argparse.Namespace, command: str) -> None:
    print(f"\nweb: {command}")
    print(f"{args.participants} participants, {args.chunk_kb} KB chunks, {args.seconds:.0f} s per side in "
          f"{args.rounds} mirrored round(s), each after {args.warmup:.0f} s warm-up, CHUNK_RATE_LIMIT={args.rate_limit}; "
          f"load average before/after: {args.load_before} / {os.getloadavg()[0]:.2f}\n")
    print(f"{'side':<9} {'chunks/s':>9} {'MB/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} "
          f"{'web CPU':>8} {'redis CPU':>9} {'client CPU':>10} {'web ms/chunk':>12} {'redis cmds/chunk':>16}")
    for s in sides:
        errors = sum(s.errors.values())
        per_chunk = s.web_cpu * 1000 / s.ok if s.ok else float("nan")
        print(f"{s.name:<9} {s.rate:9.0f} {s.rate * args.chunk_kb / 1024:6.1f} {s.percentile(0.5):7.1f} "
              f"{s.percentile(0.99):7.1f} {errors:7d} {s.web_cpu / s.seconds:7.2f}c {s.redis_cpu / s.seconds:8.2f}c "
              f"{s.client_cpu / s.seconds:9.2f}c {per_chunk:12.2f} {s.redis_commands / max(s.ok, 1):16.1f}")
        if s.errors:
            print(f"{'':<9} errors by status: {dict(sorted(s.errors.items()))}")
    for s in sides:
        calls = ", ".join(f"{name} {count / max(s.ok, 1):.2f}" for name, count in list(s.command_calls.items())[:8])
        print(f"redis calls per chunk, {s.name}: {calls}")
    by_name = {s.name: s for s in sides}
    ours = by_name.get("tapedeck")
    for name in ("floor", "floorpool"):
        if ours is None or name not in by_name:
            continue
        floor = by_name[name]
        print(f"\nthroughput ratio tapedeck/{name}: {ours.rate / floor.rate:.2f} (goal >= 0.90)")
        print(f"p99 ratio tapedeck/{name}:        {ours.percentile(0.99) / floor.percentile(0.99):.2f} (goal <= 1.20)")
        print(f"web CPU per chunk tapedeck/{name}: {ours.web_cpu / max(ours.ok, 1) / (floor.web_cpu / max(floor.ok, 1)):.2f}")
    if ours is not None:
        print(f"per-participant rate (tapedeck): {ours.rate / args.participants:.1f} chunks/s")


def profile_intake(redis_server: RedisServer, requests: int, first: bytes, bodies: list[bytes]) -> None:
    """cProfile of `requests` PUTs through tapedeck's app in this process (one thread): where intake spends."""
    from app import create_app
    from app.auth import mint_token

    staging = OUT / "profile-staging"
    env = web_env(0, redis_server.url, staging, "100000/second")
    env.pop("PORT")
    app = create_app(env)
    client = app.test_client()
    host = mint_token(JWT_SECRET, "profiled", "host", "host", 3600)
    recording_id = client.post("/video-calls/profiled/recording/start",
                               headers={"Authorization": f"Bearer {host}"}).get_json()["recordingId"]
    headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'profiled', 'alice', 'participant', 3600)}",
               "Content-Type": "application/octet-stream"}
    url = f"/video-calls/recordings/{recording_id}/participants/alice/video/chunks/"
    profiler = cProfile.Profile()
    profiler.enable()
    for sequence in range(requests):
        body = first if sequence == 0 else bodies[sequence % len(bodies)]
        assert client.put(f"{url}{sequence}", data=body, headers=headers).status_code == 202
    profiler.disable()
    shutil.rmtree(staging, ignore_errors=True)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    print(f"\ncProfile of {requests} chunk PUTs through tapedeck's app, in process:\n{text.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per side (default 60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--rate-limit", default="1000/second",
                        help="CHUNK_RATE_LIMIT for tapedeck: above any one participant's rate, so it is checked "
                             "on every request but never trips (default 1000/second)")
    parser.add_argument("--sides", default="tapedeck,floor,floorpool",
                        help="which servers to load, in order: tapedeck, floor (write on the event loop, fsync in "
                             "gevent's pool) and floorpool (write and fsync in the pool, as tapedeck's intake)")
    parser.add_argument("--rounds", type=int, default=2, help="split --seconds over mirrored rounds (default 2)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile N PUTs in process")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    first, bodies = make_bodies(encode_webm(Recording(seconds=2.0)), args.chunk_kb * 1024)
    command = procfile_web()
    commands = {"tapedeck": command, "floor": floor_line(command), "floorpool": floor_line(command)}
    redis_server = RedisServer(OUT / "redis")
    try:
        args.load_before = f"{os.getloadavg()[0]:.2f}"
        per_run = argparse.Namespace(**{**vars(args), "seconds": args.seconds / args.rounds})
        runs = [run_side(name, commands[name], redis_server, per_run, first, bodies)
                for name in schedule(args.sides.split(","), args.rounds)]
        print_report(combine(runs), args, command)
        if args.profile:
            profile_intake(redis_server, args.profile, first, bodies)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
