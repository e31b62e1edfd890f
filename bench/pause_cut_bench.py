"""What the pause cut costs finalize: the same recording remuxed without cuts (the baseline, measured in the
same run) and with pauses cut out of a client that kept recording, whose video after each cut is re-encoded
up to the next keyframe (workers/media/bridge.py). Keyframes every 100 frames, as browsers send them.

    python -m bench.pause_cut_bench [--seconds 60] [--pauses 5]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from tests.media import Recording, encode_webm, write_chunks
from tests.pause_media import slice_by_time
from workers.media.cuts import StreamCuts
from workers.media.muxer import StreamInput, mux_participant

OUT = Path(__file__).resolve().parent / "out" / "pause_cut"
T0 = 1_800_000_000_000.0
TIMESLICE = 1.0


def run(seconds: float, pauses: int) -> dict:
    shutil.rmtree(OUT, ignore_errors=True)
    spec = Recording(seconds=seconds, width=640, height=360, fps=30, keyframe_seconds=100 / 30,
                     video_bit_rate=1_000_000, noise=0.05)
    pieces = slice_by_time(encode_webm(spec), TIMESLICE)
    chunks = write_chunks([piece for _, piece in pieces], OUT / "chunks")
    stamps = {seq: T0 + start * 1000.0 for seq, (start, _) in enumerate(pieces)}
    every = seconds / (pauses + 1)
    spans = tuple((T0 + (k + 1) * every * 1000.0, T0 + ((k + 1) * every + 2.0) * 1000.0) for k in range(pauses))

    def mux(name: str, cuts: StreamCuts | None) -> tuple[float, float]:
        began = time.perf_counter()
        result = mux_participant([StreamInput("video", chunks, cuts)], OUT, name)
        return time.perf_counter() - began, result.duration_seconds

    base_seconds, base_duration = mux("baseline", None)
    cut_seconds, cut_duration = mux("cut", StreamCuts(spans, stamps, TIMESLICE * 1000.0))
    return {"recordingSeconds": seconds, "pauses": pauses, "baselineSeconds": round(base_seconds, 3),
            "cutSeconds": round(cut_seconds, 3), "ratio": round(cut_seconds / base_seconds, 2),
            "perCutSeconds": round((cut_seconds - base_seconds) / max(1, pauses), 3),
            "baselineDuration": round(base_duration, 2), "cutDuration": round(cut_duration, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pauses", type=int, default=5)
    args = parser.parse_args()
    print(run(args.seconds, args.pauses))
    shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
