"""The MP4 path's transcode (VP8/Opus → H.264/AAC with workers.media.convert.to_mp4) as a real-time factor: media
seconds per wall second. Below 1 a worker falls behind the recordings it is given."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import av

from workers.media.convert import Mp4Settings, to_mp4


@dataclass(frozen=True)
class TranscodeRun:
    """One to_mp4 call: media length, wall and CPU time (all threads of this process), output size."""

    media_seconds: float
    wall_seconds: float
    cpu_seconds: float
    output_bytes: int
    width: int
    height: int
    settings: Mp4Settings

    @property
    def realtime_factor(self) -> float:
        return self.media_seconds / self.wall_seconds

    @property
    def cores(self) -> float:
        """How many cores the transcode kept busy on average (libx264 and libvpx decode run threads)."""
        return self.cpu_seconds / self.wall_seconds


def measure_transcode(source: Path, work: Path, repeat: int, settings: Mp4Settings = Mp4Settings()) -> TranscodeRun:
    """Transcode `source` `repeat` times in this process; the fastest run counts (the machine is shared)."""
    with av.open(str(source)) as container:
        media_seconds = (container.duration or 0) / av.time_base
        video = container.streams.video[0].codec_context
        width, height = video.width, video.height
    runs = []
    for attempt in range(max(1, repeat)):
        started, cpu = time.perf_counter(), time.process_time()
        result = to_mp4(source, work, f"transcoded-{attempt}", settings)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        runs.append(TranscodeRun(media_seconds, wall, cpu, result.bytes, width, height, settings))
        result.path.unlink()
    return min(runs, key=lambda run: run.wall_seconds)


def print_transcode(run: TranscodeRun) -> None:
    """One line per case, beside the remux table; RTF = media seconds per wall second (above 1: faster than live)."""
    settings = run.settings
    header = f"{'transcode':<28}{'media':>8}{'wall s':>8}{'RTF':>7}{'CPU s':>8}{'cores':>7}{'out MB':>8}"
    print()
    print(header)
    print("-" * len(header))
    name = f"{run.width}x{run.height} VP8/Opus → MP4"
    print(f"{name:<28}{run.media_seconds:>7.1f}s{run.wall_seconds:>8.2f}{run.realtime_factor:>6.2f}x"
          f"{run.cpu_seconds:>8.1f}{run.cores:>7.2f}{run.output_bytes / 1e6:>8.1f}")
    print(f"workers.media.convert.to_mp4 with {settings.video_codec} preset {settings.video_preset} crf {settings.video_crf}, "
          f"{settings.audio_codec} {settings.audio_bit_rate // 1000} kbit/s (the MP4_* defaults), fastest run.")
