"""Capacity of a scaled-out tapedeck (issue 14), measured on this machine so the README's sizing rests on numbers:

1. finalize: one-hour recordings finalized per minute per worker process, with local staging (the worker reads the
   web node's disk) and object-store staging (the worker fetches every chunk from the bucket: the moto S3 server),
   with one and then two worker processes (the Procfile's worker line, WORKER_QUEUES=finalize, concurrency 1);
2. intake: chunks/s the Procfile's web line accepts with each staging backend, closed-loop clients as in
   bench/load_bench.py; local staging is the baseline measured in the same run;
3. prefetch: the time a worker takes to fetch one recording's chunks from the bucket with 1 GET in flight
   versus PREFETCH (8), straight from moto and with a first-byte latency added to each GET (an S3 region's
   ~20 ms, which moto on loopback does not have), so finalize is shown not to be latency-bound.

Outputs are uploaded to the same moto bucket in every case, so the two cases differ by staging alone. Everything is
written under bench/out/capacity (gitignored) and deleted at the end.

    .venv/bin/python -m bench.capacity_bench                       # 60 min recordings, 2 per case, 15 s of intake
    .venv/bin/python -m bench.capacity_bench --minutes 5 --web-seconds 5   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from tests.media import Recording, encode_webm
from tests.services import ROOT, VENV_BIN, CeleryProcess, RedisServer, free_port, wait_until

OUT = ROOT / "bench" / "out" / "capacity"
JWT_SECRET = "capacity-bench-secret-0123456789abcdef0123456789"
BUCKET = "tapedeck-capacity"
CLIP = Recording(seconds=12, width=320, height=240, fps=15, video_bit_rate=200_000, noise=0.05)
"""A small call tile (~250 kbit/s with Opus): an hour is ~3,600 one-second chunks of ~30 KB, ~110 MB."""


@dataclass
class FinalizeRow:
    staging: str
    workers: int
    recordings: int
    media_minutes: float
    chunks: int
    mb: float
    seconds: float

    @property
    def per_minute_per_worker(self) -> float:
        return self.recordings / (self.seconds / 60) / self.workers


@dataclass
class PrefetchRow:
    latency_ms: float
    in_flight: int
    seconds: float


@dataclass
class IntakeRow:
    staging: str
    chunks_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="length of each recording")
    parser.add_argument("--recordings", type=int, default=2, help="recordings finalized per case")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run")
    parser.add_argument("--web-seconds", type=float, default=15, help="measured intake window per backend")
    parser.add_argument("--participants", type=int, default=16, help="concurrent uploaders during intake")
    parser.add_argument("--latency-ms", type=float, default=20, help="first-byte latency added in the prefetch case")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    redis_server = RedisServer(OUT / "redis")
    moto = start_moto()
    try:
        chunks = make_chunks(args.minutes)
        base = base_env(redis_server.url, moto)
        os.environ.update(base)  # before tapedeck is imported: Settings and celeryconfig read it
        rows = [finalize_case(base, staging, workers, chunks, args)
                for workers in (int(n) for n in args.workers.split(",")) for staging in ("local", "object-store")]
        prefetch = prefetch_case(base, chunks, args.latency_ms)
        intake = [intake_case(base, staging, chunks, args) for staging in ("local", "object-store")]
        report(rows, intake, prefetch, chunks)
    finally:
        stop(moto)
        redis_server.stop()
        shutil.rmtree(OUT, ignore_errors=True)


def start_moto() -> subprocess.Popen:
    port = free_port()
    log = open(OUT / "moto.log", "wb")
    process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    client = s3(process.url)  # type: ignore[attr-defined]
    wait_until(lambda: _try(lambda: client.list_buckets()), 30, what="moto server")
    client.create_bucket(Bucket=BUCKET)
    return process


def s3(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                        aws_secret_access_key="bench", config=Config(s3={"addressing_style": "path"}))


def _try(call) -> bool:
    try:
        call()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def base_env(redis_url: str, moto: subprocess.Popen) -> dict[str, str]:
    return {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
        "TAPEDECK_ENV": "production", "JWT_SECRET": JWT_SECRET, "REDIS_URL": redis_url,
        "REDIS_ALLOW_NO_PERSISTENCE": "true", "STORAGE_PROVIDER": "s3", "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": moto.url, "S3_REGION": "us-east-1", "S3_FORCE_PATH_STYLE": "true",  # type: ignore[attr-defined]
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "FINALIZE_GRACE_SECONDS": "0",
        "MAX_PARTICIPANTS": "1000", "CHUNK_RATE_LIMIT": "100000/second",
        "METRICS_DIR": str(OUT / "metrics"), "GUNICORN_CMD_ARGS": "--no-control-socket",
    }


def make_chunks(minutes: float) -> list[Path]:
    """A live WebM of `minutes` (the clip's packets repeated), cut into one chunk file per second."""
    from bench.finalize_bench import slice_file, synthesize

    clip = OUT / "clip.webm"
    with open(clip, "wb") as handle:
        encode_webm(CLIP, sink=handle)  # type: ignore[arg-type]
    live = OUT / "live.webm"
    length = synthesize(clip, live, minutes * 60)
    chunks = [path for _, path in slice_file(live, OUT / "chunks", max(1, round(length)))]
    live.unlink()
    return chunks


def env_for(base: dict[str, str], staging: str, directory: Path) -> dict[str, str]:
    return {**base, "STAGING_BACKEND": staging, "STAGING_DIR": str(directory),
            "S3_PREFIX": f"capacity-{uuid.uuid4().hex[:8]}"}


def finalize_case(base: dict[str, str], staging: str, workers: int, chunks: list[Path],
                  args: argparse.Namespace) -> FinalizeRow:
    """Stage the recordings (as intake would), start the workers, stop every recording at once, time to the last."""
    from storage_providers import create_provider
    from tasks.finalize import enqueue_finalize
    from workers.chunk_index import ChunkRecord
    from workers.settings import Settings
    from workers.staging import create_staging
    from workers.state import RecordingStore

    import redis

    web_dir = OUT / f"{staging}-{workers}-web"
    env = env_for(base, staging, web_dir)
    settings = Settings.from_env(env)
    provider = create_provider(env=env)
    store_ = RecordingStore(redis.Redis.from_url(env["REDIS_URL"]))
    stager = create_staging(staging, web_dir, 0, provider)
    recordings = []
    for index in range(args.recordings):
        room, recording_id = f"cap-{uuid.uuid4().hex[:8]}", f"rec_{uuid.uuid4().hex}"
        store_.start(room, recording_id, "webm", {})
        recordings.append((room, recording_id))

        def put(item: tuple[int, Path], recording_id: str = recording_id) -> None:
            sequence, path = item
            data = path.read_bytes()
            staged = stager.stage(recording_id, "alice", "video", sequence, data)
            record = ChunkRecord(digest=staged.digest, size=staged.size, timestamp=None, name=staged.name)
            outcome, _ = store_.accept_chunk(recording_id, "alice", "video", sequence, record, container_ok=True,
                                             header=sequence == 0)
            assert outcome == "stored", outcome

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, enumerate(chunks)))
    processes = []
    for number in range(workers):
        worker_env = {**env, "WORKER_QUEUES": "finalize", "WORKER_CONCURRENCY": "1",
                      "WORKER_NAME": f"cap{number}-{uuid.uuid4().hex[:4]}", "WORKER_METRICS_PORT": str(free_port())}
        if staging == "object-store":
            worker_env["STAGING_DIR"] = str(OUT / f"scratch-{number}")  # never the web node's disk
        processes.append(CeleryProcess(worker_env, OUT / f"worker-{staging}-{workers}-{number}.log",
                                       argv=["bash", "-c", procfile_line("worker")]))
    try:
        for process in processes:
            process.wait_ready(120)
        started = time.perf_counter()
        for room, recording_id in recordings:
            task_id = str(uuid.uuid4())
            store_.stop(room, settings.finalize_grace_seconds, task_id=task_id)
            enqueue_finalize(recording_id, task_id)
        for room, recording_id in recordings:
            wait_until(lambda: (store_.get(recording_id) or {}).get("state") in ("completed", "failed"), 3600,
                       interval=0.05, what=f"{recording_id} finalized")
            state = store_.get(recording_id)
            assert state["state"] == "completed", state.get("error")
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.stop()
    for _, recording_id in recordings:
        stager.remove_recording(recording_id)
    for info in provider.list("recordings/"):
        provider.delete(info.key)
    shutil.rmtree(web_dir, ignore_errors=True)
    size = sum(path.stat().st_size for path in chunks)
    row = FinalizeRow(staging, workers, len(recordings), len(chunks) / 60, len(chunks), size / 1e6, seconds)
    print(f"finalize {staging:12} workers={workers} {row.recordings} x {row.media_minutes:.0f} min: "
          f"{seconds:.1f} s → {row.per_minute_per_worker:.2f} per minute per worker", flush=True)
    return row


def prefetch_case(base: dict[str, str], chunks: list[Path], latency_ms: float) -> list[PrefetchRow]:
    """Fetch one staged recording to a worker's disk as finalize does (local_chunks), 1 vs PREFETCH GETs at once."""
    from storage_providers import create_provider
    from workers.staging import object_store

    env = env_for(base, "object-store", OUT / "prefetch")
    provider = create_provider(env=env)
    recording_id = f"rec_{uuid.uuid4().hex}"
    stager = object_store.ObjectStoreStaging(provider, OUT / "prefetch")
    with ThreadPoolExecutor(16) as pool:
        staged = list(pool.map(lambda item: stager.stage(recording_id, "alice", "video", item[0], item[1].read_bytes()),
                               enumerate(chunks)))
    wanted = [(sequence, chunk.name, chunk.size) for sequence, chunk in enumerate(staged)]
    rows = []
    plain_open = object_store._S3Objects.open
    for latency in (0.0, latency_ms):
        def slow_open(self, key, _latency=latency):  # noqa: ANN001 - the GET waits as a remote region's would
            time.sleep(_latency / 1000)
            return plain_open(self, key)

        object_store._S3Objects.open = slow_open  # type: ignore[method-assign]
        for in_flight in (1, object_store.PREFETCH):
            fetcher = object_store.ObjectStoreStaging(provider, OUT / "prefetch", prefetch=in_flight)
            started = time.perf_counter()
            got = fetcher.local_chunks(recording_id, "alice", "video", wanted)
            seconds = time.perf_counter() - started
            assert all(path is not None for _, path in got)
            fetcher.release(recording_id, "alice")
            rows.append(PrefetchRow(latency, in_flight, seconds))
            print(f"prefetch latency={latency:.0f} ms in_flight={in_flight}: {seconds:.2f} s", flush=True)
    object_store._S3Objects.open = plain_open  # type: ignore[method-assign]
    stager.remove_recording(recording_id)
    return rows


def procfile_line(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"Procfile has no {name} line")


def intake_case(base: dict[str, str], staging: str, chunks: list[Path], args: argparse.Namespace) -> IntakeRow:
    """The Procfile's web line with this staging backend under closed-loop uploaders (bench/load_client.py)."""
    import urllib.request

    from bench.load_client import Target, drive
    from workers.settings import Settings
    from workers.state import RecordingStore

    import redis

    port = free_port()
    env = {**env_for(base, staging, OUT / f"intake-{staging}"), "PORT": str(port), "BIND_HOST": "127.0.0.1"}
    store_ = RecordingStore(redis.Redis.from_url(env["REDIS_URL"]))
    room, recording_id = f"load-{uuid.uuid4().hex[:8]}", f"rec_{uuid.uuid4().hex}"
    store_.start(room, recording_id, "webm", {})
    with open(OUT / f"web-{staging}.log", "wb") as log:
        web = subprocess.Popen(["bash", "-c", procfile_line("web")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            return _try(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())

        wait_until(lambda: web.poll() is not None or healthy(), 60, what="web")
        assert web.poll() is None, (OUT / f"web-{staging}.log").read_text()[-3000:]
        from app.auth import mint_token

        Settings.from_env(env)  # the same variables the web line parsed
        target = Target("127.0.0.1", port, recording_id, lambda participant: {
            "Authorization": f"Bearer {mint_token(JWT_SECRET, room, participant, 'participant', 3600)}"})
        first, bodies = chunks[0].read_bytes(), [path.read_bytes() for path in chunks[1:9]]
        participants = [f"p{i:02d}" for i in range(args.participants)]
        tallies = drive(target, participants, first, bodies, warmup=2.0, seconds=args.web_seconds)
    finally:
        os.killpg(web.pid, signal.SIGINT)
        web.wait(30)
    ok = sum(count for t in tallies for status, count in t.statuses.items() if status == 202)
    errors = sum(count for t in tallies for status, count in t.statuses.items() if status != 202)
    latencies = sorted(x for t in tallies for x in t.latencies)
    row = IntakeRow(staging, ok / args.web_seconds, statistics.median(latencies) * 1000,
                    latencies[int(0.99 * (len(latencies) - 1))] * 1000, errors)
    print(f"intake   {staging:12} {row.chunks_per_second:.0f} chunks/s p50 {row.p50_ms:.1f} ms p99 {row.p99_ms:.1f} ms "
          f"errors {errors}", flush=True)
    return row


def report(rows: list[FinalizeRow], intake: list[IntakeRow], prefetch: list[PrefetchRow], chunks: list[Path]) -> None:
    print(f"\nrecording: {len(chunks)} chunks, {sum(p.stat().st_size for p in chunks) / 1e6:.0f} MB "
          f"({CLIP.width}x{CLIP.height} {CLIP.fps} fps VP8 + Opus), outputs to the moto bucket")
    print(f"{'staging':13} {'workers':>7} {'recs':>4} {'wall s':>7} {'rec/min':>8} {'per worker':>10} {'vs local':>8}")
    local = {row.workers: row for row in rows if row.staging == "local"}
    for row in rows:
        total = row.recordings / (row.seconds / 60)
        ratio = local[row.workers].seconds / row.seconds if row.workers in local else float("nan")
        print(f"{row.staging:13} {row.workers:>7} {row.recordings:>4} {row.seconds:>7.1f} {total:>8.2f} "
              f"{row.per_minute_per_worker:>10.2f} {ratio:>7.2f}x")
    print(f"\n{'fetch one recording':20} {'added latency':>13} {'in flight':>9} {'seconds':>8} {'chunks/s':>8}")
    for row in prefetch:
        print(f"{'':20} {row.latency_ms:>10.0f} ms {row.in_flight:>9} {row.seconds:>8.2f} "
              f"{len(chunks) / row.seconds:>8.0f}")
    base = next((r for r in intake if r.staging == "local"), None)
    print(f"\n{'intake':13} {'chunks/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'vs local':>8}")
    for row in intake:
        ratio = row.chunks_per_second / base.chunks_per_second if base else float("nan")
        print(f"{row.staging:13} {row.chunks_per_second:>8.0f} {row.p50_ms:>7.1f} {row.p99_ms:>7.1f} "
              f"{row.errors:>6} {ratio:>7.2f}x")
    print(json.dumps({"finalize": [asdict(r) for r in rows], "intake": [asdict(r) for r in intake],
                      "prefetch": [asdict(r) for r in prefetch]}))


if __name__ == "__main__":
    sys.exit(main())
