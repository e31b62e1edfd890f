"""Stop → completed with LIVE_FINALIZE against the batch finalize and `ffmpeg -c copy`, on the same bytes, for
recordings of several lengths, on local storage and against the S3 and GCS test servers (issue 15). Chunks go
through the real intake (Flask test client), live steps run every LIVE_STEP chunks as tapedeck.live_step would,
finalize runs in this process against its own Redis. Prints the time after stop, the part of it the storage
server spent finishing the object (moto's CompleteMultipartUpload concatenates every part, the GCS emulator's
compose rewrites the object: the test servers' own linear costs, reported apart), tapedeck's own time (the
difference), their ratios to ffmpeg, the peak RSS of finalize (VmHWM reset just before it), the CPU the live
steps cost per recorded hour, and how flat the time is in the recording's length. `--format mp4` runs MP4 recordings:
batch transcodes after stop, live transcodes each window while recording and only copies into MP4 at stop.
`--input fmp4` sends H.264/AAC fragmented MP4 as Safari's MediaRecorder writes it (batch and live copy it)."""
from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import os
import resource
import shutil
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench.finalize_bench import OUT, make_clip, run_ffmpeg, slice_file, status_mb, synthesize

PROFILE: list[int] = [0]
"""--profile N: print the N costliest calls (cumulative) of each live stop → completed."""

STEP_CHUNKS = 10
"""One live step per ten one-second chunks: LIVE_STEP_SECONDS=10, the default (--step-chunks)."""
TRANSCODE_STEP_CHUNKS = 2
"""One per two with --format mp4: LIVE_TRANSCODE_STEP_SECONDS=2, the default for an MP4 recording."""


@dataclass(frozen=True)
class Steps:
    """When the live steps run while recording: every `every` chunks, the last one `tail` chunks before the end (the
    stop lands that far into a step period: 0 is right after a step, `every - 1` just before the next one)."""

    every: int = STEP_CHUNKS
    tail: int = 0

    def after(self, sequence: int, count: int) -> bool:
        """Whether a step runs after chunk `sequence` of `count`."""
        left = count - 1 - self.tail - sequence
        return left >= 0 and left % self.every == 0


PROVIDERS = ("local", "s3", "gcs")
SELF_STATUS = "/proc/self/status"


@dataclass(frozen=True)
class Side:
    stop_seconds: float
    mux_seconds: float
    """Of stop_seconds, the mux stage (live: fold the tail and close the file; batch: the whole remux)."""
    server_seconds: float
    """Of stop_seconds, the storage server finishing the object (CompleteMultipartUpload, compose calls)."""
    server_ahead_seconds: float
    """Not in stop_seconds: the same server calls while recording (GCS composes the parts sent ahead as they come)."""
    peak_rss_mb: float
    live_cpu_seconds: float = 0.0
    duration: float = 0.0
    poster_seconds: float = 0.0
    """Of stop_seconds, the poster: made from the closed file, or (taken while recording) its JPEG checked."""
    stop_cpu_seconds: float = 0.0
    """CPU of this process (every thread) from stop to completed: tapedeck's own work, little affected by the load,
    none of it the storage server's (another process)."""
    wait_seconds: float = 0.0
    """Of stop_seconds, waiting on storage requests (every call, the union of their spans; server included)."""
    requests: int = 0
    """Storage requests from stop to completed."""
    rss_at_stop_mb: float = 0.0
    """VmRSS just before stop: what intake and the live steps (this same process) left resident. peak_rss_mb less
    this is what finalize itself added."""
    output_mb: float = 0.0
    """The finished file's size (status `bytes`): what windows cost in size where each starts an encoder anew."""

    @property
    def local_seconds(self) -> float:
        """tapedeck's time after stop with no storage request in flight: its own work, whatever the server."""
        return self.stop_seconds - self.wait_seconds

    @property
    def own_seconds(self) -> float:
        """tapedeck's own time after stop: everything but the server's finishing calls."""
        return self.stop_seconds - self.server_seconds


@dataclass
class ServerClock:
    """Wall time of the storage server's finishing calls: inside `window()` (stop → completed) in `seconds`, before
    it (while recording) in `ahead_seconds`. The calls are synchronous requests with a small body, so their time
    is the server's work. Also every storage request's span inside the window (`requests`, `wait_seconds`: the
    union of the spans, so parts in flight together count once), which separates tapedeck's local work from the
    test server's answers, whose time grows with what the server holds (moto keeps every object in memory)."""

    running: bool = False
    seconds: float = 0.0
    ahead_seconds: float = 0.0
    spans: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float) -> None:
        if self.running:
            self.seconds += seconds
        else:
            self.ahead_seconds += seconds

    def request(self, started: float, ended: float) -> None:
        """One storage request (any call, any thread) that ran from `started` to `ended` (perf_counter)."""
        if self.running:
            with self.lock:
                self.spans.append((started, ended))

    @property
    def requests(self) -> int:
        return len(self.spans)

    @property
    def wait_seconds(self) -> float:
        total, reach = 0.0, float("-inf")
        for started, ended in sorted(self.spans):
            if ended > reach:
                total += ended - max(started, reach)
                reach = ended
        return total

    def reset(self) -> None:
        self.running, self.seconds, self.ahead_seconds = False, 0.0, 0.0
        with self.lock:
            self.spans.clear()

    @contextmanager
    def window(self) -> Iterator[None]:
        self.running = True
        try:
            yield
        finally:
            self.running = False

    @contextmanager
    def watching_s3(self, client: Any) -> Iterator[None]:
        """botocore's documented event hooks around every call on the provider's own client (`before-call.s3`
        matches each operation's event); CompleteMultipartUpload's also counted as the server's finishing."""
        def before(context: dict, **_: Any) -> None:
            context["bench_started"] = time.perf_counter()

        def after(context: dict, model: Any, **_: Any) -> None:
            if "bench_started" in context:
                started = context.pop("bench_started")
                ended = time.perf_counter()
                self.request(started, ended)
                if model.name == "CompleteMultipartUpload":
                    self.add(ended - started)

        events = client.meta.events
        events.register("before-call.s3", before, unique_id="bench-s3-before")
        events.register("after-call.s3", after, unique_id="bench-s3-after")
        try:
            yield
        finally:
            events.unregister("before-call.s3", unique_id="bench-s3-before")
            events.unregister("after-call.s3", unique_id="bench-s3-after")

    @contextmanager
    def watching_gcs(self) -> Iterator[None]:
        """Every GCS request, whichever way the provider sends it (the SDK's calls and a bare AuthorizedSession both
        end in requests.Session.send), timed for the run; compose requests (JSON API `POST …/o/<name>/compose`)
        also counted as the server's finishing."""
        import requests

        send = requests.Session.send
        clock = self

        def timed_send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            compose = request.method == "POST" and (request.path_url or "").split("?")[0].endswith("/compose")
            started = time.perf_counter()
            try:
                return send(session, request, **kwargs)
            finally:
                ended = time.perf_counter()
                clock.request(started, ended)
                if compose:
                    clock.add(ended - started)

        requests.Session.send = timed_send  # type: ignore[method-assign]
        try:
            yield
        finally:
            requests.Session.send = send  # type: ignore[method-assign]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def record_and_stop(env: dict[str, str], chunks: list[tuple[int, Path]], live: bool, clock: ServerClock,
                    fmt: str = "webm", steps: Steps = Steps()) -> Side:
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
    with ExitStack() as hooks:
        if env["STORAGE_PROVIDER"] == "s3":
            hooks.enter_context(clock.watching_s3(resources.provider.client))  # type: ignore[attr-defined]
        return _record_and_stop(api, resources, chunks, live, clock, Path(env["STAGING_DIR"]), fmt, steps)


def _record_and_stop(api: Any, resources: Any, chunks: list[tuple[int, Path]], live: bool, clock: ServerClock,
                     staging: Path, fmt: str = "webm", steps: Steps = Steps()) -> Side:
    """The measured part of record_and_stop, run while the storage hooks are in place."""
    clock.reset()
    rec = api.start(format=fmt).get_json()["recordingId"]
    live_cpu = 0.0
    for sequence, path in chunks:
        response = api.put_chunk(rec, "alice", "video", sequence, path.read_bytes())
        assert response.status_code == 202, response.get_json()
        if live and steps.after(sequence, len(chunks)):
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
    rss_at_stop = status_mb(SELF_STATUS, "VmRSS")  # what intake and the live steps left resident in this process
    profiler = cProfile.Profile() if live and PROFILE[0] else None
    poster_times: list[float] = []
    with clock.window(), timed_posters(resources.finalizer.live, poster_times):
        cpu_before = _cpu()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        assert api.stop().status_code == 202
        state = resources.finalizer.run(rec)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        stop_cpu = _cpu() - cpu_before
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(PROFILE[0])
        print(text.getvalue(), flush=True)
    body = api.status(rec).get_json()
    assert state == "completed", body
    if live:
        assert resources.finalizer.live.states.get(rec, "alice").windows > 1, "the live path was not used"
        assert body["outputs"][0]["format"] == fmt or (fmt, body["outputs"][0]["format"]) == ("webm", "mkv")
        if fmt == "webm":  # (H.264/AAC from fragmented MP4 input is written as Matroska, as batch writes it)
            assert body["outputs"][0]["checksum"]["algorithm"] == "sha256-parts", "a whole-file SHA-256 was computed"
    duration, output_mb = body["outputs"][0]["durationSeconds"], body["outputs"][0]["bytes"] / 1e6
    for name in resources.provider.list(f"recordings/{body['room']}/"):
        resources.provider.delete(name.key)
    shutil.rmtree(staging / rec, ignore_errors=True)
    return Side(elapsed, sum(mux_times), clock.seconds, clock.ahead_seconds, status_mb(SELF_STATUS, "VmHWM"), live_cpu,
                duration, sum(poster_times), stop_cpu, clock.wait_seconds, clock.requests, rss_at_stop,
                output_mb)


@contextmanager
def timed_posters(live: Any, times: list[float]) -> Iterator[None]:
    """Time the poster's work after stop: the poster made from a closed file (batch's and the live path's
    `poster_or_none`) and the check of one taken while recording (`_kept_poster`, where it exists)."""
    import workers.live.step as step
    import workers.outputs as outputs

    def timed(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - begun)
        return wrapper

    saved = [(outputs, "poster_or_none", outputs.poster_or_none), (step, "poster_or_none", step.poster_or_none)]
    if live is not None and hasattr(live, "_kept_poster"):
        saved.append((live, "_kept_poster", live._kept_poster))  # noqa: SLF001
    for owner, name, function in saved:
        setattr(owner, name, timed(function))
    try:
        yield
    finally:
        for owner, name, function in saved:
            if owner is live:
                delattr(owner, name)
            else:
                setattr(owner, name, function)


def provider_lengths(value: str) -> tuple[str, list[float] | None]:
    """`NAME` (every --minutes length) or `NAME=10,60` (only these lengths, each also in --minutes' order)."""
    name, _, lengths = value.partition("=")
    if name not in PROVIDERS:
        raise argparse.ArgumentTypeError(f"provider must be one of {', '.join(PROVIDERS)}, not {name!r}")
    try:
        return name, [float(m) for m in lengths.split(",")] if lengths else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be minutes separated by commas: {value!r}") from None


def start_servers(stack: ExitStack, names: set[str], work: Path) -> dict[str, dict[str, str]]:
    """Each provider's environment; the S3 and GCS test servers started as the tests start them. STORAGE_PART_SIZE
    stays at its default, the live part size, so parts go ahead as they would in production."""
    from tests.storage_servers import running_gcs_emulator, running_moto

    envs = {"local": {"STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(work / "recordings")}}
    if "s3" in names:
        (work / "moto").mkdir()
        envs["s3"] = {**stack.enter_context(running_moto(work / "moto")), "S3_PREFIX": "bench"}
    if "gcs" in names:
        (work / "gcs").mkdir()
        envs["gcs"] = stack.enter_context(running_gcs_emulator(work / "gcs"))
    return envs


@contextmanager
def announced_live_consumer(redis_url: str) -> Iterator[None]:
    """This process runs the live steps, so it announces itself as a live worker does: intake then schedules steps
    (into a queue nobody consumes here) as it would in production, instead of counting them unqueued."""
    import redis

    from workers.live.consumers import Heartbeat, LiveConsumers

    heartbeat = Heartbeat(LiveConsumers(redis.Redis.from_url(redis_url)), "live-bench", refresh_seconds=10)
    heartbeat.start()
    try:
        yield
    finally:
        heartbeat.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="recording lengths")
    parser.add_argument("--provider", type=provider_lengths, nargs="+", default=[("local", None), ("s3", [10.0])],
                        metavar="NAME[=MINUTES,...]",
                        help="stores to run: local, s3 (moto server), gcs (gcp-storage-emulator); NAME=10,60 runs "
                             "that store at these lengths only (the test servers hold every object in memory)")
    parser.add_argument("--live-only", action="store_true", help="skip the batch side (halves the run's time)")
    parser.add_argument("--format", choices=("webm", "mp4"), default="webm",
                        help="the recordings' output format: mp4 transcodes (batch after stop, live while recording)")
    parser.add_argument("--input", choices=("webm", "fmp4"), default="webm",
                        help="what the client sends: VP8/Opus WebM (Chromium, Firefox) or H.264/AAC fragmented MP4 "
                             "(Safari)")
    parser.add_argument("--step-chunks", type=int, default=None, metavar="N",
                        help="a live step every N one-second chunks while recording (default: as the product "
                             f"steps, {STEP_CHUNKS} (LIVE_STEP_SECONDS), or {TRANSCODE_STEP_CHUNKS} "
                             "(LIVE_TRANSCODE_STEP_SECONDS) with --format mp4)")
    parser.add_argument("--tail-chunks", type=int, default=0, metavar="K",
                        help="the last live step K chunks before the end: where in a step period the stop lands")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="cProfile each live stop → completed and print its N costliest calls (cumulative)")
    args = parser.parse_args()
    if args.step_chunks is None:
        args.step_chunks = TRANSCODE_STEP_CHUNKS if args.format == "mp4" else STEP_CHUNKS
    if not 0 <= args.tail_chunks < args.step_chunks:
        parser.error("--tail-chunks must be at least 0 and less than --step-chunks")
    PROFILE[0] = args.profile
    steps = Steps(args.step_chunks, args.tail_chunks)
    plan = {name: lengths or args.minutes for name, lengths in args.provider}
    lengths = sorted({m for ms in plan.values() for m in ms})
    from tasks import celery_app
    from tests.conftest import JWT_SECRET
    from tests.services import RedisServer

    work = OUT / "live"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server = RedisServer(work / "redis", appendonly=True)
    env = {**os.environ, "TAPEDECK_ENV": "development", "JWT_SECRET": JWT_SECRET, "REDIS_URL": server.url,
           "STAGING_DIR": str(work / "staging"), "FINALIZE_GRACE_SECONDS": "0", "STAGING_MIN_FREE_BYTES": "0",
           "MAX_CHUNK_BYTES": str(64 * 1024 * 1024), "CHUNK_RATE_LIMIT": "100000/second",
           "LOG_FORMAT": "text", "PUBLIC_BASE_URL": "http://localhost"}
    celery_app.conf.update(broker_url=server.url, result_backend=server.url)  # queued tasks wait, unconsumed
    rows = []
    stack = ExitStack()
    clock = ServerClock()
    try:
        stack.enter_context(announced_live_consumer(server.url))
        envs = start_servers(stack, set(plan), work)
        if "gcs" in plan:
            stack.enter_context(clock.watching_gcs())
        clip = make_clip(work, fmp4=args.input == "fmp4")
        for minutes in lengths:  # each length synthesized once: every store and both paths get the same bytes
            case = work / f"{minutes:g}min"
            case.mkdir()
            source = case / f"recording{clip.suffix}"
            length = synthesize(clip, source, minutes * 60)
            chunks = slice_file(source, case / "chunks", max(1, round(length)))
            ffmpeg = run_ffmpeg(source, case)
            size_mb = source.stat().st_size / 1e6
            source.unlink()
            for provider in (p for p in PROVIDERS if minutes in plan.get(p, [])):
                case_env = {**env, **envs[provider]}
                load = os.getloadavg()[0]
                batch = None if args.live_only else record_and_stop(case_env, chunks, live=False, clock=clock,
                                                                        fmt=args.format)
                live = record_and_stop(case_env, chunks, live=True, clock=clock, fmt=args.format, steps=steps)
                assert batch is None or abs(batch.duration - live.duration) < 0.05, (batch, live)
                rows.append((minutes, provider, size_mb, ffmpeg, batch, live, max(load, os.getloadavg()[0])))
                print(f"{minutes:g} min {provider} done", flush=True)
            shutil.rmtree(case)
    finally:
        stack.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)


def print_table(rows: list) -> None:
    header = (f"{'length':>7}{'store':>6}{'input':>8}{'ffmpeg':>8}{'batch':>7}{'(mux)':>7}{'live':>7}{'server':>7}"
              f"{'own':>7}{'reqs':>5}{'wait':>7}{'local':>7}{'cpu':>7}{'(mux)':>7}{'poster':>7}{'live/ff':>8}{'own/ff':>7}"
              f"{'batch RSS':>10}{'live RSS':>9}{'(stop)':>8}{'live CPU/h':>11}"
              f"{'ahead':>7}{'out':>7}{'load':>6}")
    print(header)
    print("-" * len(header))
    for minutes, provider, mb, ffmpeg, batch, live, load in rows:
        per_hour = live.live_cpu_seconds * 60 / minutes
        batch_cells = (f"{batch.stop_seconds:>7.2f}{batch.mux_seconds:>7.2f}" if batch else f"{'-':>7}{'-':>7}")
        print(f"{minutes:>6g}m{provider:>6}{mb:>6.0f}MB{ffmpeg.seconds:>8.2f}{batch_cells}"
              f"{live.stop_seconds:>7.2f}{live.server_seconds:>7.2f}{live.own_seconds:>7.2f}"
              f"{live.requests:>5}{live.wait_seconds:>7.2f}{live.local_seconds:>7.2f}"
              f"{live.stop_cpu_seconds:>7.3f}{live.mux_seconds:>7.2f}"
              f"{live.poster_seconds:>7.3f}"
              f"{live.stop_seconds / ffmpeg.seconds:>7.2f}x{live.own_seconds / ffmpeg.seconds:>6.2f}x"
              f"{batch.peak_rss_mb if batch else 0:>8.0f}MB{live.peak_rss_mb:>7.0f}MB{live.rss_at_stop_mb:>6.0f}MB"
              f"{per_hour:>10.1f}s"
              f"{live.server_ahead_seconds:>7.2f}{live.output_mb:>5.0f}MB{load:>6.1f}")
    for provider in PROVIDERS:
        mine = [row for row in rows if row[1] == provider]
        if len(mine) > 1:
            (first_minutes, first), (last_minutes, last) = (mine[0][0], mine[0][5]), (mine[-1][0], mine[-1][5])
            print(f"flatness {provider} {last_minutes:g} min / {first_minutes:g} min (goal <= 1.5x): stop → completed "
                  f"{last.stop_seconds / first.stop_seconds:.2f}x, tapedeck's own "
                  f"{last.own_seconds / first.own_seconds:.2f}x, without any request in flight "
                  f"{last.local_seconds / max(first.local_seconds, 1e-6):.2f}x, requests {last.requests}/{first.requests}, "
                  f"mux stage {last.mux_seconds / first.mux_seconds:.2f}x, "
                  f"CPU {last.stop_cpu_seconds / max(first.stop_cpu_seconds, 1e-6):.2f}x")
    print("Seconds from the stop request to `completed` (finalize in this process, grace 0). live = with live finalize;\n"
          "server = of which the storage server finishing the object: S3 CompleteMultipartUpload (moto concatenates\n"
          "every part), GCS compose calls (the emulator rewrites the object); a whole-file GCS upload has none and counts\n"
          "entirely as tapedeck's. own = live - server, tapedeck's own time. reqs = storage requests after stop; wait =\n"
          "time with at least one of them in flight (the server's answers, server included); local = live - wait.\n"
          "cpu = this process's CPU (all threads) over the same time: little affected by the load, none of it the\n"
          "server's. (mux) = the mux stage. poster =\n"
          "of live, the poster made from the closed file, or the check of the one taken while recording. ffmpeg =\n"
          "`ffmpeg -c copy` of the same bytes. RSS = VmHWM of this process (intake and finalize) reset just before stop;\n"
          "(stop) = its VmRSS then, what intake and the live steps left resident: RSS - (stop) is finalize's own.\n"
          "live CPU/h = CPU of the live steps (with their part uploads) per recorded hour. ahead = the server's finishing\n"
          "calls while recording (GCS composes the parts sent ahead as they come), not part of stop → completed. out =\n"
          "the live side's finished file. load =\n"
          "the 1-minute load average, the higher of before and after the store's sides.")

if __name__ == "__main__":
    main()
