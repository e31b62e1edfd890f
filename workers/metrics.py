"""The metrics every tapedeck process may update, defined once so web, worker and webhook code share names.

prometheus-client picks its value store at import: with PROMETHEUS_MULTIPROC_DIR set, each process writes
its own mmap file and the exporter sums them, so several gunicorn workers or Celery processes on one node
report one total. Updating a metric is an in-process operation: no Redis round trip on the chunk path.
"""
from __future__ import annotations

import os

_FOLDER = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
if _FOLDER:  # prometheus-client opens its files there as soon as a metric is defined below
    os.makedirs(_FOLDER, exist_ok=True)

from prometheus_client import Counter, Histogram  # noqa: E402 - after the folder exists

NAMESPACE = "tapedeck"

CHUNKS_RECEIVED = Counter("chunks_received", "Chunks accepted by the intake (stored or duplicate)",
                          ["type"], namespace=NAMESPACE)
BYTES_RECEIVED = Counter("bytes_received", "Decoded chunk bytes accepted by the intake", namespace=NAMESPACE)
FAILED_UPLOADS = Counter("failed_uploads", "Chunk uploads answered with an error status", ["status"],
                         namespace=NAMESPACE)
UPLOAD_LATENCY = Histogram("upload_latency_seconds", "Time to accept one chunk upload", namespace=NAMESPACE,
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
STORAGE_BYTES_WRITTEN = Counter("storage_bytes_written", "Output bytes uploaded to the storage provider",
                                namespace=NAMESPACE)
RECORDING_DURATION = Histogram("recording_duration_seconds", "Media duration of finalized recordings",
                               namespace=NAMESPACE, buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800))
FINALIZE_DURATION = Histogram("finalize_duration_seconds", "Wall time of one finalize task", namespace=NAMESPACE,
                              buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
STOP_TO_COMPLETED = Histogram("stop_to_completed_seconds", "Time from stop to the recording being completed",
                              namespace=NAMESPACE, buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600))
TASK_FAILURES = Counter("task_failures", "Celery tasks that raised", ["task"], namespace=NAMESPACE)
WEBHOOK_DELIVERIES = Counter("webhook_deliveries", "Webhook delivery attempts by outcome", ["outcome"],
                             namespace=NAMESPACE)
"""outcome: delivered, retry (receiver down or non-2xx, tried again later) or failed (gave up)."""
LIVE_STEPS = Counter("live_steps", "Live finalize steps per participant by outcome", ["outcome"], namespace=NAMESPACE)
"""outcome: folded (media appended), waiting (nothing complete yet, or the lock busy) or batch (left to batch)."""
LIVE_MP4_OUTPUTS = Counter("live_mp4_outputs", "format: mp4 outputs of the live path by how they were made at stop",
                           ["outcome"], namespace=NAMESPACE)
"""outcome: in_place (the MP4 written while recording, its header inserted in front) or copied (the live Matroska
copied into an MP4 at stop, which grows with the length: a copied track with reordered frames, or a failure)."""
LIVE_STEPS_UNQUEUED = Counter("live_steps_unqueued", "Live steps not queued because no worker consumes the live queue",
                              namespace=NAMESPACE)
"""At most one per recording per LIVE_STEP_SECONDS (web): rising means those recordings finalize by batch."""
LIVE_STEP_DURATION = Histogram("live_step_seconds", "Wall time of one participant's live step that folded media",
                               namespace=NAMESPACE, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


_RECEIVED_BY_TYPE: dict[str, Counter] = {}


def chunk_accepted(stream_type: str, size: int, seconds: float) -> None:
    """Counts one accepted chunk: three in-process updates, the whole cost on the hot path."""
    received = _RECEIVED_BY_TYPE.get(stream_type)
    if received is None:  # labels() validates and locks on every call: look each stream type's child up once
        received = _RECEIVED_BY_TYPE.setdefault(stream_type, CHUNKS_RECEIVED.labels(stream_type))
    received.inc()
    BYTES_RECEIVED.inc(size)
    UPLOAD_LATENCY.observe(seconds)


def recording_completed(stopped_at: str | None, durations: list[float], now: float) -> None:
    """One completed recording: its longest output's media length, and how long after stop it became final."""
    if durations:
        RECORDING_DURATION.observe(max(durations))
    if stopped_at:
        STOP_TO_COMPLETED.observe(max(0.0, now - float(stopped_at)))
