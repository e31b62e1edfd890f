"""The floor of any durable chunk intake, for bench/load_bench.py: a bare Flask route that writes the body
with fsync and records it with one Redis HSET — no auth, no checks, nothing else. tapedeck's intake cannot
be cheaper than this under the same gunicorn settings, so its throughput is reported as a ratio to it.

Served with the Procfile's web line, its app spec swapped for 'bench.floor_app:create_app()'; reads
REDIS_URL and STAGING_DIR from the environment. FLOOR_DISK_IN_POOL=true (the bench's `floorpool` side) runs the
write and fsync in gevent's thread pool, as tapedeck's intake runs its disk work under the gevent worker; otherwise
only the fsync goes there (gunicorn.conf.py) and creating and writing the file block the worker's loop.
"""
from __future__ import annotations

import os
from pathlib import Path

import redis
from flask import Flask, jsonify, request

FLOOR_KEY = "floor:chunks"
"""One hash for every chunk: field <recording>/<participant>/<type>/<sequence>, value <size>."""


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _runner():  # type: ignore[no-untyped-def]
    """Where the disk work runs: inline, or gevent's thread pool with FLOOR_DISK_IN_POOL=true under gevent."""
    if os.environ.get("FLOOR_DISK_IN_POOL", "").lower() == "true":
        from gevent import get_hub, monkey

        if monkey.is_module_patched("socket"):
            return lambda work, *args: get_hub().threadpool.apply(work, args)
    return lambda work, *args: work(*args)


def create_app() -> Flask:
    """One route, the same path as tapedeck's raw PUT so the load client is the same for both."""
    app = Flask(__name__)
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    root = Path(os.environ.get("STAGING_DIR", "./var/floor")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    run = _runner()

    @app.put("/video-calls/recordings/<recording_id>/participants/<participant_id>/<kind>/chunks/<int:sequence>")
    def put_chunk(recording_id: str, participant_id: str, kind: str, sequence: int):
        data = request.get_data(cache=False)
        name = f"{recording_id}-{participant_id}-{kind}-{sequence:08d}.chunk"
        run(write, root / name, data)
        client.hset(FLOOR_KEY, f"{recording_id}/{participant_id}/{kind}/{sequence}", len(data))
        return jsonify(sequence=sequence, bytes=len(data)), 202

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
