"""Issue 15's demo-flow figure: in the /demo page (browser module, default settings), how long after the last
chunk's 202 the recording is `completed`, for a 5 s and a 60 s recording, in one run:

- `final`: the demo page as it is (stop() sends the last chunk with `Tapedeck-Final: true`, then POST stop), with
  LIVE_FINALIZE=false (the batch finalize);
- `final+live`: the same with live finalize, the default (the worker line consumes every queue, `live` included);
- `no-final`: a client that never declares its last chunk (the page's fetch drops the header), so finalize
  waits out FINALIZE_GRACE_SECONDS (default 5 s), LIVE_FINALIZE=false: the baseline.

Each mode runs the Procfile's `web` and `worker` lines (bash -c, as honcho would) on a private redis-server,
its own STAGING_DIR and local storage, TAPEDECK_ENV=development (the demo's /dev/token); everything else is
the default. Headless Chromium (/usr/bin/chromium, fake camera and microphone) clicks Start, records, clicks
Stop. Timestamps, all on this host's wall clock:

- page: when each chunk PUT's 202 resolved (a fetch wrapper), the POST stop's reply, and when the page's own
  event stream delivered `state: completed` (an EventSource wrapper);
- server: the status' `completedAt` (written by the worker), and when a poller here (every 20 ms, GET status)
  first saw `completed`.

Prints the median over --repeat runs of each, and every run. Stops every process it started, also on failure.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from tests.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.procfile import http_json, procfile_command
from tests.services import ROOT, VENV_BIN, CeleryProcess, RedisServer, free_port, wait_until

JWT_SECRET = "demo-flow-bench-secret-0123456789abcdef0123456789"
POLL_SECONDS = 0.02
MODES = {"final": {"LIVE_FINALIZE": "false"}, "final+live": {}, "no-final": {"LIVE_FINALIZE": "false"}}

INIT_SCRIPT = """(() => {
  const bench = (window.__bench = { chunks: [], stopReply: null, sseCompleted: null,
                                    stripFinal: %(strip)s });
  const original = window.fetch.bind(window);
  window.fetch = async (input, init = {}) => {
    const url = typeof input === "string" ? input : input.url;
    const chunk = /\\/chunks\\/\\d+$/.test(url) && init.method === "PUT";
    let final = false;
    if (chunk && init.headers) {
      const headers = { ...init.headers };
      final = headers["Tapedeck-Final"] === "true";
      if (bench.stripFinal) delete headers["Tapedeck-Final"];
      init = { ...init, headers };
    }
    const response = await original(input, init);
    if (chunk) bench.chunks.push({ at: Date.now(), status: response.status, final, url });
    if (/\\/recording\\/stop$/.test(url)) bench.stopReply = Date.now();
    return response;
  };
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("state", (e) => {
        try {
          if (JSON.parse(e.data).state === "completed" && bench.sseCompleted === null) bench.sseCompleted = Date.now();
        } catch { /* not JSON: not ours to judge */ }
      });
    }
  };
})();"""


@dataclass(frozen=True)
class Run:
    mode: str
    seconds: int
    chunks: int
    last_ack: float
    """Wall-clock epoch seconds when the last 202 of any chunk resolved in the page (every chunk acknowledged)."""
    clicked: float
    """When this process clicked Stop (negative delta: before the last 202)."""
    final_ack: float
    """When the final chunk's 202 resolved (uploads run in parallel: it need not be the last)."""
    stop_reply: float
    page_completed: float
    server_completed: float
    polled_completed: float

    def delta(self, field: str) -> float:
        return getattr(self, field) - self.last_ack


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    web: subprocess.Popen
    worker: CeleryProcess


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@contextmanager
def stack(work: Path, extra: dict[str, str]) -> Iterator[Stack]:
    """The Procfile's web and worker lines on a private Redis; every process stopped on exit."""
    work.mkdir(parents=True)
    redis = RedisServer(work / "redis")
    port = free_port()
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
        "TAPEDECK_ENV": "development", "JWT_SECRET": JWT_SECRET, "REDIS_URL": redis.url, "PORT": str(port),
        "BIND_HOST": "127.0.0.1", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "STAGING_DIR": str(work / "staging"), "STORAGE_PROVIDER": "local",
        "LOCAL_STORAGE_DIR": str(work / "recordings"), "METRICS_DIR": str(work / "metrics"),
        "WORKER_METRICS_PORT": str(free_port()), "WORKER_NAME": f"bench-{uuid.uuid4().hex[:6]}",
        "GUNICORN_CMD_ARGS": "--no-control-socket", **extra,
    }
    (work / "metrics").mkdir()
    web = worker = None
    try:
        with open(work / "web.log", "wb") as log:
            web = subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        worker = CeleryProcess(env, work / "worker.log", argv=["bash", "-c", procfile_command("worker")])
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return web.poll() is not None or http_json("GET", f"{base}/healthz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(up, 60, what="web")
        assert web.poll() is None, (work / "web.log").read_text()[-3000:]
        worker.wait_ready()
        yield Stack(base, env, web, worker)
    finally:
        if web is not None:
            for sig in (signal.SIGINT, signal.SIGKILL):  # SIGINT: gunicorn's quick shutdown
                try:
                    os.killpg(web.pid, sig)
                    web.wait(15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        if worker is not None:
            try:
                worker.kill(signal.SIGTERM)  # waits up to 30 s for the warm shutdown
            except subprocess.TimeoutExpired:
                worker.kill(signal.SIGKILL)
        redis.stop()


def _poll_completed(base: str, token: str, recording_id: str, done: threading.Event, seen: list) -> None:
    """The server side: GET status every POLL_SECONDS until it says completed (or failed)."""
    while not done.is_set():
        status, body = http_json("GET", f"{base}/video-calls/recordings/{recording_id}", token, timeout=10)
        if status == 200 and body.get("state") in ("completed", "failed"):
            seen.append(time.time())
            seen.append(body)
            return
        time.sleep(POLL_SECONDS)


def record_once(browser, st: Stack, mode: str, seconds: int, fmt: str = "") -> Run:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(60_000)
    context.add_init_script(INIT_SCRIPT % {"strip": "true" if mode == "no-final" else "false"})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    done, seen = threading.Event(), []
    try:
        page.goto(f"{st.base}/demo?room={room}")
        if fmt:  # the page's own choice under Advanced (unset: the server's RECORDING_FORMAT, webm)
            page.click("#advanced summary")
            page.select_option("#format", fmt)
        page.click("#start")
        page.wait_for_function("document.body.dataset.phase === 'recording'")
        recording_id = page.evaluate("window.tapedeck.recordingId")
        token = page.evaluate("window.tapedeck.token")
        poller = threading.Thread(target=_poll_completed, args=(st.base, token, recording_id, done, seen),
                                  daemon=True)
        time.sleep(seconds)
        poller.start()
        clicked = time.time()
        page.click("#stop")
        page.wait_for_function("window.__bench.sseCompleted !== null || ['completed', 'failed', 'error']"
                               ".includes(document.body.dataset.phase)", timeout=120_000)
        poller.join(60)
        bench = page.evaluate("window.__bench")
    finally:
        done.set()
        context.close()
    assert seen and seen[1]["state"] == "completed", (seen, errors, st.worker.tail())
    chunks = bench["chunks"]
    assert chunks and all(c["status"] == 202 for c in chunks), chunks[-3:]
    finals = [c for c in chunks if c["final"]]
    assert len(finals) == 1, ("the demo page must send exactly one chunk as final", chunks[-4:])
    assert bench["sseCompleted"] is not None, bench
    body = seen[1]
    assert body["format"] == (fmt or "webm"), body
    return Run(mode, seconds, len(chunks), max(c["at"] for c in chunks) / 1000, clicked, finals[0]["at"] / 1000,
               bench["stopReply"] / 1000, bench["sseCompleted"] / 1000, _epoch(body["completedAt"]), seen[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, nargs="+", default=[5, 60], help="recording lengths (default 5 60)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode and length; medians printed")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--format", choices=("webm", "mp4"), default="",
                        help="the File format picked on the page (default: none picked, the server's webm)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for every mode's web and worker (e.g. LIVE_TRANSCODE_STEP_SECONDS=10)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(extra) != len(args.set):
        parser.error("--set takes NAME=VALUE")
    if not CHROMIUM.exists():
        raise SystemExit("needs Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    # web and worker lead sessions of their own: a SIGTERM to this process must still run the finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="demo-flow-bench-"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
            try:
                for mode in args.modes:
                    with stack(work / mode, {**MODES[mode], **extra}) as st:
                        for repeat in range(args.repeat):
                            for seconds in args.seconds:
                                run = record_once(browser, st, mode, seconds, args.format)
                                runs.append(run)
                                print(f"  {mode:<11} {seconds:>3} s #{repeat + 1}: last 202 → completed "
                                      f"page {run.delta('page_completed'):.3f} s, server "
                                      f"{run.delta('server_completed'):.3f} s, poll "
                                      f"{run.delta('polled_completed'):.3f} s ({run.chunks} chunks)", flush=True)
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(runs, args)


def print_report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\nmedian of {args.repeat}, seconds after the last chunk's 202 (page clock = server clock, one host)")
    print(f"{'mode':<11} {'length':>6} {'chunks':>6} {'stop click':>10} {'final 202':>9} {'stop reply':>10} "
          f"{'server completedAt':>18} {'poll saw completed':>18} {'page SSE completed':>18}")
    for mode in args.modes:
        for seconds in args.seconds:
            mine = [r for r in runs if r.mode == mode and r.seconds == seconds]
            if not mine:
                continue

            def med(field: str) -> float:
                return statistics.median(r.delta(field) for r in mine)

            print(f"{mode:<11} {seconds:>5}s {statistics.median(r.chunks for r in mine):>6.0f} "
                  f"{med('clicked'):>10.3f} {med('final_ack'):>9.3f} {med('stop_reply'):>10.3f} "
                  f"{med('server_completed'):>18.3f} {med('polled_completed'):>18.3f} {med('page_completed'):>18.3f}")


if __name__ == "__main__":
    main()
