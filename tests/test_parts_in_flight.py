"""The part uploaders' shared loop (storage_providers.base.put_parts_concurrently): a bound on parts held in memory
whatever the pool's size, and no part left reading the file after the loop ends, however it ends."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage_providers.base import IN_FLIGHT_BYTES, parts_in_flight, put_parts_concurrently

PART = 1024


class Recorder:
    """A put(fd, number) that reads its part like the uploaders do and notes how many run at once."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.read: list[int] = []
        self.fail_at = fail_at

    def __call__(self, fd: int, number: int) -> tuple[dict, int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            chunk = os.pread(fd, PART, (number - 1) * PART)  # EBADF if the file was closed under it
            if number == self.fail_at:
                raise OSError(f"part {number} refused")
            with self.lock:
                self.read.append(number)
            return {"number": number, "data": chunk}, len(chunk)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "out.webm"
    path.write_bytes(b"".join(bytes([n]) * PART for n in range(1, 21)))
    return path


def test_no_more_parts_in_flight_than_the_limit_even_with_a_larger_pool(source: Path) -> None:
    put = Recorder()
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(put_parts_concurrently(source, range(1, 21), put, pool, limit=3))
    assert put.most == 3
    assert sorted(part["number"] for part, _ in got) == list(range(1, 21))
    assert all(part["data"] == bytes([part["number"]]) * PART for part, _ in got)


def test_large_parts_lower_the_limit() -> None:
    assert parts_in_flight(8 * 1024 * 1024) == 4
    assert parts_in_flight(32 * 1024 * 1024) == 2
    assert parts_in_flight(5 * 1024 ** 3) == 1
    assert parts_in_flight(16 * 1024 * 1024) * 16 * 1024 * 1024 <= IN_FLIGHT_BYTES


def test_a_failed_part_starts_nothing_more_and_the_running_ones_are_still_yielded(source: Path) -> None:
    put = Recorder(fail_at=2)
    got = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        with pytest.raises(OSError, match="part 2 refused"):
            for part, _ in put_parts_concurrently(source, range(1, 21), put, pool, limit=2):
                got.append(part["number"])
    assert sorted(got) == sorted(put.read)  # every part read was handed back to be recorded
    assert len(put.read) < 19  # the queue stopped at the failure


def test_an_error_in_the_callers_loop_leaves_no_part_reading_a_closed_file(source: Path) -> None:
    put = Recorder()
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = put_parts_concurrently(source, range(1, 21), put, pool, limit=4)
        with pytest.raises(RuntimeError):
            for _ in parts:
                raise RuntimeError("checkpoint could not be saved")
        parts.close()  # what the for statement's unwinding does; explicit here, not left to the collector
        assert put.running == 0
        settled = len(put.read)
        time.sleep(0.1)
        assert len(put.read) == settled  # nothing was left queued to run after the file closed
