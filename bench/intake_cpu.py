"""CPU per chunk PUT through tapedeck's WSGI app in process, for changes too small for the load bench to see on a
shared box: `--against DIR` runs another checkout (e.g. `git worktree add /tmp/before HEAD~1`) at the same time as
this one, pair by pair, so both meet the same contention from other jobs. Each side has its own Redis and stages on
tmpfs (so fsync costs nothing and only the CPU of the work remains); CPU is the process's user + system time.

    .venv/bin/python -m bench.intake_cpu --against /tmp/before --pairs 4 --requests 3000

`--gevent N`: as the Procfile's web worker runs it: the standard library patched by gevent, gunicorn.conf.py's
post_worker_init (fsync and a chunk's disk work in gevent's thread pool), and N greenlets uploading at once (their
own participants), which is where the loaded web worker spends CPU that one caller in a loop does not show.

`--floor`: bench/floor_app.py (the load bench's floor: fsync + one HSET) measured beside this tree in the same
harness, pair by pair, so tapedeck's own CPU per chunk over the floor's is read without gunicorn or the network.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 300


def _environ(path: str, body: bytes, token: str) -> dict:
    """What gunicorn hands the app for a raw chunk PUT (the same keys the Procfile's web line sees)."""
    return {"REQUEST_METHOD": "PUT", "SCRIPT_NAME": "", "PATH_INFO": path, "RAW_URI": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/octet-stream", "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_AUTHORIZATION": f"Bearer {token}"}


def measure(requests: int, chunk_kb: int, greenlets: int = 0, floor: bool = False) -> dict:
    """CPU seconds per PUT over `requests` PUTs of one participant (or of `greenlets` at once), after a warm-up."""
    scratch = Path(tempfile.mkdtemp(prefix="intake-cpu-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(scratch / "metrics")  # as gunicorn.conf.py sets it for web
    (scratch / "metrics").mkdir()
    sys.path.insert(0, str(Path.cwd()))
    from bench.load_bench import JWT_SECRET, web_env
    from bench.load_client import make_bodies
    from tests.media import Recording, encode_webm
    from tests.services import RedisServer

    redis_server = RedisServer(scratch / "redis")
    try:
        env = web_env(0, redis_server.url, scratch / "staging", "1000000/second")
        env.pop("PORT")
        names = [f"p{n}" for n in range(max(1, greenlets))]
        if floor:  # its disk work in gevent's pool under --gevent, as tapedeck's (the load bench's floorpool)
            os.environ.update({**env, "FLOOR_DISK_IN_POOL": "true" if greenlets else "false"})
            from bench.floor_app import create_app as create_floor

            app, recording_id, tokens = create_floor(), "rec_floor", {name: "none" for name in names}
        else:
            from app import create_app
            from app.auth import mint_token

            app = create_app(env)
            host = mint_token(JWT_SECRET, "cpu", "host", "host", 3600)
            started = app.test_client().post("/video-calls/cpu/recording/start",
                                             headers={"Authorization": f"Bearer {host}"})
            recording_id = started.get_json()["recordingId"]
            tokens = {name: mint_token(JWT_SECRET, "cpu", name, "participant", 3600) for name in names}
        if greenlets:  # both sides alike: fsync in gevent's pool and the loaded app frozen out of the collector's sight
            _post_worker_init()
        first, bodies = make_bodies(encode_webm(Recording(seconds=2.0)), chunk_kb * 1024)
        statuses: dict[str, int] = {}

        def put(sequence: int, name: str = names[0]) -> None:
            body = first if sequence == 0 else bodies[sequence % len(bodies)]
            path = f"/video-calls/recordings/{recording_id}/participants/{name}/video/chunks/{sequence}"
            answer = app(_environ(path, body, tokens[name]), lambda status, headers, exc=None: statuses.update(
                {status: statuses.get(status, 0) + 1}))
            b"".join(answer)
            getattr(answer, "close", lambda: None)()

        def run(first_sequence: int, count: int) -> None:
            if not greenlets:
                for sequence in range(first_sequence, first_sequence + count):
                    put(sequence)
                return
            import gevent

            each = count // greenlets
            gevent.joinall([gevent.spawn(lambda name=name: [put(first_sequence + i, name) for i in range(each)])
                            for name in names])

        run(0, WARMUP * len(names) if greenlets else WARMUP)
        before = os.times()
        run(WARMUP, requests)
        after = os.times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {"tree": "floor" if floor else str(Path.cwd()), "cpu_ms_per_put": 1000 * cpu / requests, "statuses": statuses}
    finally:
        redis_server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _post_worker_init() -> None:
    """gunicorn.conf.py's post_worker_init, as the gevent worker runs it once the app is loaded."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gunicorn_conf", Path.cwd() / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)  # type: ignore[union-attr]
    conf.post_worker_init(None)


FLOOR = Path("floor")
"""The side that runs bench/floor_app.py from this tree (--floor) instead of a checkout's tapedeck."""


def _child(tree: Path, args: argparse.Namespace) -> subprocess.Popen:
    """This file runs in `tree` (its app, bench and tests come from there), so a checkout older than it works too."""
    floor = tree == FLOOR
    tree = ROOT if floor else tree
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "--requests", str(args.requests),
                             "--chunk-kb", str(args.chunk_kb), "--gevent", str(args.gevent)] + (["--floor"] if floor else []),
                            cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(tree)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, help="another checkout, run at the same time as this one")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--gevent", type=int, default=0, metavar="N",
                        help="patch with gevent and upload from N greenlets at once, as the web worker runs")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/floor_app.py (the load bench's floor) in the same harness")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.requests, args.chunk_kb, args.gevent, args.floor)))
        return
    trees = [ROOT] + ([args.against.resolve()] if args.against else []) + ([FLOOR] if args.floor else [])
    results: dict[Path, list[float]] = {tree: [] for tree in trees}
    for pair in range(args.pairs):
        started = time.monotonic()
        children = {tree: _child(tree, args) for tree in (trees if pair % 2 == 0 else trees[::-1])}
        for tree, child in children.items():
            out, _ = child.communicate()
            result = json.loads(out.decode().strip().splitlines()[-1])
            results[tree].append(result["cpu_ms_per_put"])
            print(f"pair {pair}: {tree}: {result['cpu_ms_per_put']:.3f} ms CPU per PUT {result['statuses']}", flush=True)
        print(f"pair {pair} took {time.monotonic() - started:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
    for tree, values in results.items():
        print(f"{tree}: median {statistics.median(values):.3f} ms CPU per PUT ({', '.join(f'{v:.3f}' for v in values)})")
    for other, label in ((args.against and trees[1], "--against"), (args.floor and FLOOR, "the floor")):
        if other:
            diffs = [a - b for a, b in zip(results[ROOT], results[other])]
            print(f"this tree minus {label}, pair by pair: median {statistics.median(diffs) * 1000:+.0f} us per PUT")


if __name__ == "__main__":
    if "--child" in sys.argv and "--gevent" in sys.argv and sys.argv[sys.argv.index("--gevent") + 1] != "0":
        from gevent import monkey

        monkey.patch_all()  # before the app (and redis, prometheus) import threading and socket
    main()
