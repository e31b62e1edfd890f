"""CPU and Redis command counts of the load bench's servers over a measured window (psutil and INFO)."""
from __future__ import annotations

import resource
import threading
import time

import psutil
import redis


def _cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of a process and all its children (gunicorn's master and workers)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU seconds of web, Redis and this client between two instants, sampled by a timer thread."""

    def __init__(self, web: psutil.Process, redis_proc: psutil.Process, client: redis.Redis) -> None:
        self.web, self.redis_proc, self.client = web, redis_proc, client
        self.samples: list[tuple[float, float, float, int]] = []
        self.command_samples: list[dict[str, int]] = []

    def sample(self) -> None:
        commands = int(self.client.info("stats")["total_commands_processed"])
        self.samples.append((_cpu_seconds(self.web), _cpu_seconds(self.redis_proc), _client_cpu(), commands))
        stats = self.client.info("commandstats")
        self.command_samples.append({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})

    def schedule(self, warmup: float, seconds: float) -> threading.Thread:
        def run() -> None:
            time.sleep(warmup)
            self.sample()
            time.sleep(seconds)
            self.sample()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def deltas(self) -> tuple[float, float, float, int]:
        (w0, r0, c0, n0), (w1, r1, c1, n1) = self.samples
        return w1 - w0, r1 - r0, c1 - c0, n1 - n0

    def command_deltas(self) -> dict[str, int]:
        """Calls per Redis command over the window (what each chunk costs Redis, by name)."""
        before, after = self.command_samples
        deltas = {name: calls - before.get(name, 0) for name, calls in after.items()}
        return {name: count for name, count in sorted(deltas.items(), key=lambda kv: -kv[1]) if count > 0}
