"""The S3 upload at a live output's stop, on its own: a multipart upload sent ahead (parts 2..N, as live steps send
them), then `upload_file` with the output's `sha256-parts` metadata adopts it, sends part 1 and the tail, checks
the parts with ListParts and completes. Against the moto server, with an optional simulated round trip (every
request waits `--rtt-ms` before it is sent, in its own thread) to show what the number of requests in a row costs
on a real network. Prints the median and best of tapedeck's own time (the call's wall time less
CompleteMultipartUpload, which moto answers by concatenating every part) and of this process's CPU (issue 15)."""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

PART = 8 * 1024 * 1024
"""STORAGE_PART_SIZE's default, the live part size: parts go ahead."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", type=int, default=28, help="parts of the output (28: about 10 min of 720p)")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip added to every request")
    args = parser.parse_args()
    from storage_providers import create_provider
    from tests.storage_servers import MemoryCheckpoint, running_moto

    work = Path(tempfile.mkdtemp(prefix="tapedeck-s3-stop-"))
    try:
        path = work / "alice.live.webm"
        path.write_bytes(os.urandom(PART * (args.parts - 1) + 3 * 1024 * 1024))  # a short tail
        with running_moto(work) as env:
            provider = create_provider("s3", {**env, "S3_PREFIX": "bench"})
            client = provider.client  # type: ignore[attr-defined]
            server = [0.0]

            def before(context: dict, **_: object) -> None:
                context["bench_started"] = time.perf_counter()

            def after(context: dict, **_: object) -> None:
                if "bench_started" in context:
                    server[0] += time.perf_counter() - context.pop("bench_started")

            client.meta.events.register("before-call.s3.CompleteMultipartUpload", before)
            client.meta.events.register("after-call.s3.CompleteMultipartUpload", after)
            if args.rtt_ms:
                client.meta.events.register("before-send.s3", lambda **_: time.sleep(args.rtt_ms / 1000))
            meta = {"sha256-parts": f"{PART}:bench", "recording-id": "bench"}
            owns, cpus = [], []
            for run in range(args.runs):
                key, checkpoint = f"recordings/bench/{run}.webm", MemoryCheckpoint()
                provider.upload_ahead(key, path, list(range(2, args.parts)), content_type="video/webm",  # type: ignore[attr-defined]
                                      metadata=meta, checkpoint=checkpoint)
                server[0] = 0.0
                cpu, started = _cpu(), time.perf_counter()
                provider.upload_file(key, path, content_type="video/webm", metadata=meta, checkpoint=checkpoint)
                owns.append(time.perf_counter() - started - server[0])
                cpus.append(_cpu() - cpu)
                provider.delete(key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"parts={args.parts} rtt={args.rtt_ms:g} ms runs={args.runs}: own median {statistics.median(owns):.3f} s "
          f"(best {min(owns):.3f}), cpu median {statistics.median(cpus):.3f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
