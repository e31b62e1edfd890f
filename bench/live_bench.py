"""Stop → completed with LIVE_FINALIZE against the batch finalize and `ffmpeg -c copy`, on the same bytes, for
recordings of several lengths (issue 15). Chunks go through the real intake (Flask test client), live steps
run every LIVE_STEP chunks as tapedeck.live_step would, finalize runs in this process against its own Redis
and local storage. Prints the time after stop, its ratio to ffmpeg, the peak RSS of finalize (VmHWM reset
just before it), and the CPU the live steps cost per recorded hour."""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.finalize_bench import OUT, make_clip, run_ffmpeg, slice_file, synthesize

STEP_CHUNKS = 10
"""One live step per ten one-second chunks: LIVE_STEP_SECONDS=10, the default."""


@dataclass(frozen=True)
class Side:
    stop_seconds: float
    mux_seconds: float
    """Of stop_seconds, the mux stage (live: fold the tail and close the file; batch: the whole remux)."""
    peak_rss_mb: float
    live_cpu_seconds: float = 0.0
    duration: float = 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def record_and_stop(env: dict[str, str], chunks: list[tuple[int, Path]], live: bool) -> Side:
    """One recording through intake; live steps while it records (live side); then stop and finalize timed."""
    from app import create_app
    from tests.conftest import Api
    from workers.resources import Resources
    from workers.settings import Settings

    env = {**env, "LIVE_FINALIZE": "true" if live else "false"}
    app = create_app(env)
    logging.getLogger().setLevel(logging.WARNING)  # development logs every request: noise here, and time
    api = Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")
    resources = Resources.build(Settings.from_env(env), env)
    rec = api.start().get_json()["recordingId"]
    live_cpu = 0.0
    for sequence, path in chunks:
        response = api.put_chunk(rec, "alice", "video", sequence, path.read_bytes())
        assert response.status_code == 202, response.get_json()
        if live and sequence % STEP_CHUNKS == STEP_CHUNKS - 1:
            before = _cpu()
            resources.finalizer.live.step(rec)
            live_cpu += _cpu() - before
    mux_times = []
    mux_all = resources.finalizer._mux_all  # noqa: SLF001 - timed from outside, the finalizer unchanged

    def timed_mux(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return mux_all(*args, **kwargs)
        finally:
            mux_times.append(time.perf_counter() - begun)

    resources.finalizer._mux_all = timed_mux  # type: ignore[method-assign]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on is finalize's own peak
    started = time.perf_counter()
    assert api.stop().status_code == 202
    state = resources.finalizer.run(rec)
    elapsed = time.perf_counter() - started
    body = api.status(rec).get_json()
    assert state == "completed", body
    if live:
        assert resources.finalizer.live.states.get(rec, "alice").windows > 1, "the live path was not used"
        assert body["outputs"][0]["checksum"]["algorithm"] == "sha256-parts", "a whole-file SHA-256 was computed"
    duration = body["outputs"][0]["durationSeconds"]
    for name in resources.provider.list(f"recordings/{body['room']}/"):
        resources.provider.delete(name.key)
    shutil.rmtree(Path(env["STAGING_DIR"]) / rec, ignore_errors=True)
    return Side(elapsed, sum(mux_times), _peak_mb(), live_cpu, duration)


def _moto(stack: ExitStack, work: Path) -> dict[str, str]:
    """The moto S3 server the tests use, with their bucket; the s3 provider's environment."""
    from tests.services import free_port
    from tests.storage_servers import BUCKET, _program, _server, s3_client

    url = f"http://127.0.0.1:{free_port()}"
    stack.enter_context(_server([_program("moto_server"), "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]], url,
                                work / "moto.log"))
    env = {"STORAGE_PROVIDER": "s3", "S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": url, "S3_REGION": "us-east-1",
           "S3_FORCE_PATH_STYLE": "true", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "S3_PREFIX": "bench"}
    s3_client(env).create_bucket(Bucket=BUCKET)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="recording lengths")
    parser.add_argument("--s3-minutes", type=float, nargs="*", default=[10],
                        help="lengths also run against the moto S3 server (it holds every object in memory)")
    args = parser.parse_args()
    from tasks import celery_app
    from tests.conftest import JWT_SECRET
    from tests.services import RedisServer

    work = OUT / "live"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server = RedisServer(work / "redis", appendonly=True)
    env = {**os.environ, "TAPEDECK_ENV": "development", "JWT_SECRET": JWT_SECRET, "REDIS_URL": server.url,
           "STAGING_DIR": str(work / "staging"), "LOCAL_STORAGE_DIR": str(work / "recordings"),
           "STORAGE_PROVIDER": "local", "FINALIZE_GRACE_SECONDS": "0", "STAGING_MIN_FREE_BYTES": "0",
           "MAX_CHUNK_BYTES": str(64 * 1024 * 1024), "CHUNK_RATE_LIMIT": "100000/second",
           "LOG_FORMAT": "text", "PUBLIC_BASE_URL": "http://localhost"}
    celery_app.conf.update(broker_url=server.url, result_backend=server.url)  # queued tasks wait, unconsumed
    rows = []
    stack = ExitStack()
    try:
        s3_env = _moto(stack, work) if args.s3_minutes else {}
        clip = make_clip(work)
        cases = [(m, "local", env) for m in args.minutes] + [(m, "s3", {**env, **s3_env}) for m in args.s3_minutes]
        for minutes, provider, case_env in cases:
            case = work / f"{minutes:g}min-{provider}"
            case.mkdir()
            source = case / "recording.webm"
            length = synthesize(clip, source, minutes * 60)
            chunks = slice_file(source, case / "chunks", max(1, round(length)))
            ffmpeg = run_ffmpeg(source, case)
            batch = record_and_stop(case_env, chunks, live=False)
            live = record_and_stop(case_env, chunks, live=True)
            rows.append((minutes, provider, source.stat().st_size / 1e6, ffmpeg, batch, live))
            shutil.rmtree(case)
            print(f"{minutes:g} min {provider} done", flush=True)
    finally:
        stack.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    header = (f"{'length':>7}{'store':>6}{'input':>8}{'ffmpeg':>8}{'batch':>7}{'(mux)':>7}{'live':>7}{'(mux)':>7}"
              f"{'live/ff':>8}{'mux/ff':>7}{'batch RSS':>10}{'live RSS':>9}{'live CPU/h':>11}{'dur':>6}")
    print(header)
    print("-" * len(header))
    for minutes, provider, mb, ffmpeg, batch, live in rows:
        per_hour = live.live_cpu_seconds * 60 / minutes
        print(f"{minutes:>6g}m{provider:>6}{mb:>6.0f}MB{ffmpeg.seconds:>8.2f}{batch.stop_seconds:>7.2f}{batch.mux_seconds:>7.2f}"
              f"{live.stop_seconds:>7.2f}{live.mux_seconds:>7.2f}{live.stop_seconds / ffmpeg.seconds:>7.2f}x"
              f"{live.mux_seconds / ffmpeg.seconds:>6.2f}x{batch.peak_rss_mb:>8.0f}MB{live.peak_rss_mb:>7.0f}MB"
              f"{per_hour:>10.1f}s{live.duration:>6.0f}")
    local = [row for row in rows if row[1] == "local"]
    if len(local) > 1:
        first, last = local[0][5], local[-1][5]
        print(f"flatness {local[-1][0]:g} min / {local[0][0]:g} min: stop {last.stop_seconds / first.stop_seconds:.2f}x,"
              f" mux stage {last.mux_seconds / first.mux_seconds:.2f}x")
    print("seconds from the stop request to `completed` (finalize in this process, grace 0); (mux) = "
          "its mux stage, the rest is upload, checksum, poster, manifest (live: part checksums hashed while "
          "recording, and local storage links the closed file in place); ffmpeg = `ffmpeg -c copy` of the same "
          "bytes; RSS = VmHWM reset just before stop; live CPU/h = CPU of the live steps per recorded hour. s3 = the "
          "moto server on this machine: its CompleteMultipartUpload concatenates every part, its own linear cost.")


if __name__ == "__main__":
    main()
