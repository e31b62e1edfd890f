"""`make test`: the suite in two phases, so a hung headless browser can cost minutes, never the whole run.

Everything but the browser tests runs in one pytest process. Each browser test file then runs in a pytest
process of its own under a hard wall clock: headless Chromium has been seen (twice, on 2 busy cores) to spin
in the kernel with Playwright's driver deaf to every timeout inside the test process, so the limit has to be
enforced from outside. A browser file whose process had to be killed gets one more try in a fresh process;
a file that fails normally does not (a real failure is reported, not retried away).

This runner makes itself the child subreaper, so Chromium's processes — which Playwright starts in their own
process group and which outlive a killed driver — are re-parented here and can be found and killed: nothing
is left running after a phase.

The last line is the total over all phases ("tapedeck: N passed, N failed, N skipped"); the exit status is 0
only when nothing failed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN_PHASE_SECONDS = 45 * 60
BROWSER_FILE_SECONDS = 8 * 60
"""A browser file takes 30–90 s on a loaded 2-core box; past 8 minutes it is hung, not slow."""
BROWSER_TRIES = 2
OBJECT_STORE_SUITE = [
    "tests/test_recording_flow.py", "tests/test_final.py", "tests/test_crash_recovery.py", "tests/test_api_errors.py",
    "tests/test_trust.py::test_rebuild_restores_a_forgotten_recording_from_staging",
    "tests/test_trust.py::test_unreadable_staged_chunk_is_reported_missing",
    "tests/test_trust.py::test_commit_whose_reply_is_lost_keeps_the_chunk",
]
"""The chunk and finalize suites (flow, duplicates, conflicts, holes, grace, crash recovery, rebuild) run a second
time with STAGING_BACKEND=object-store on the moto S3 server, so both staging backends keep the documented behaviour."""
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, other: "Counts") -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped


def become_subreaper() -> None:
    """Orphaned grandchildren (Chromium after its driver died) become our children instead of init's."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def descendants(root: int) -> list[int]:
    """Every process below `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_leftovers() -> None:
    """SIGKILL every process still below this runner, then reap them."""
    for _ in range(3):
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    time.sleep(0.1)
            except ChildProcessError:
                break


def counts_from(junit: Path) -> Counts | None:
    """Counts from pytest's JUnit XML; None when the run never wrote it (killed)."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = Counts()
    for suite in suites:
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts.add(Counts(passed=total - failed - skipped, failed=failed, skipped=skipped))
    return counts


def run_pytest(args: list[str], seconds: int, junit: Path) -> tuple[int | None, Counts | None]:
    """One pytest process in its own session; (exit code or None if it had to be killed, counts)."""
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", f"--junitxml={junit}", *args]
    print("+", " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        code: int | None = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        print(f"\n!! pytest outlived its {seconds} s wall clock: killing it and everything it started", flush=True)
        code = None
    kill_leftovers()
    return code, counts_from(junit)


def browser_files(args: list[str]) -> list[str]:
    """The test files holding browser tests, among those the arguments select."""
    listing = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "browser", *args],
                             cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    files: list[str] = []
    for line in listing.stdout.splitlines():
        name = line.split("::", 1)[0]
        if "::" in line and name not in files:
            files.append(name)
    return files


def split_paths(args: list[str]) -> tuple[list[str], list[str]]:
    """(options, test paths or node ids) of the arguments given to `make test`."""
    paths = [a for a in args if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
    return [a for a in args if a not in paths], paths


def main(args: list[str]) -> int:
    become_subreaper()
    total = Counts()
    with tempfile.TemporaryDirectory(prefix="tapedeck-test-") as scratch:
        junit = Path(scratch) / "junit.xml"
        code, counts = run_pytest(["-m", "not browser", *args], MAIN_PHASE_SECONDS, junit)
        if counts is None:
            counts = Counts(failed=1)
        elif code not in (0, 1, 5) and counts.failed == 0:
            counts.failed += 1  # interrupted or an internal error: never report it green
        total.add(counts)
        options, paths = split_paths(args)
        if not paths:  # the whole suite: the staging-sensitive part once more on object-store staging
            code, counts = run_pytest(["-m", "not browser", "--staging-backend=object-store", *options,
                                       *OBJECT_STORE_SUITE], MAIN_PHASE_SECONDS, junit)
            if counts is None or (code not in (0, 1, 5) and counts.failed == 0):
                counts = Counts(failed=max(1, counts.failed if counts else 1))
            total.add(counts)
        for path in browser_files(args):
            selected = [p for p in paths if p.split("::")[0] == path] or [path]
            for attempt in range(1, BROWSER_TRIES + 1):
                code, counts = run_pytest(["-m", "browser", *options, *selected], BROWSER_FILE_SECONDS, junit)
                if code is not None:
                    break
                print(f"!! {path}: killed (attempt {attempt} of {BROWSER_TRIES})", flush=True)
            if counts is None or (code not in (0, 1, 5) and counts.failed == 0):
                counts = Counts(failed=max(1, counts.failed if counts else 1))
            total.add(counts)
    kill_leftovers()
    print(f"tapedeck: {total.passed} passed, {total.failed} failed, {total.skipped} skipped", flush=True)
    return 1 if total.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
