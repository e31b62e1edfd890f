"""DESIGN.md §5.4: kill -9 of the whole worker mid-finalize; after a restart (with beat) it completes, once."""
from __future__ import annotations

import os
import time

from tests.media import Recording, encode_webm, probe, slice_timeslice
from tests.services import CeleryProcess, wait_until
from workers import keys

PARTICIPANTS = [f"p{i}" for i in range(8)]
"""Enough work that finalize is still running when the test kills it."""


def test_kill_9_mid_finalize_recovers_within_two_minutes(api, worker, stack_env, tmp_root, app):
    from app.services import services

    pieces = slice_timeslice(encode_webm(Recording(seconds=3.0)), 6)
    recording_id = api.start().get_json()["recordingId"]
    for participant in PARTICIPANTS:
        for sequence, piece in enumerate(pieces):
            assert api.put_chunk(recording_id, participant, "video", sequence, piece).status_code == 202
    with app.app_context():
        redis_client = services().redis
    assert api.stop().status_code == 202

    wait_until(lambda: redis_client.exists(keys.finalize_lock(recording_id)), 30, interval=0.005, what="finalize to start")
    worker.kill()  # SIGKILL to the whole process group: main process and every pool child
    state = api.status(recording_id).get_json()["state"]
    assert state in ("finalizing", "muxing", "uploading"), f"finalize finished before the kill ({state})"

    restarted_at = time.monotonic()
    worker.restart()
    worker.wait_ready()
    beat = CeleryProcess({**os.environ, **stack_env}, tmp_root / "beat.log", "beat", "--schedule", str(tmp_root / "beat-schedule"))
    try:
        body = api.wait_final(recording_id, timeout=120)
    finally:
        beat.stop()
    assert time.monotonic() - restarted_at < 120
    assert body["state"] == "completed", body
    assert sorted(o["participantId"] for o in body["outputs"]) == PARTICIPANTS
    expected = [f"{p}.{ext}" for p in PARTICIPANTS for ext in ("webm", "jpg")] + ["manifest.json"]
    assert api.stored_names(body) == sorted(expected)  # each once, no leftover parts
    assert probe(api.output_path(body, "p7")).frames["video"] > 0
