"""GET /metrics: open, parseable by prometheus-client, and its chunk counters match what was uploaded."""
from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.media import WEBM_HEADER


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_declares_every_metric(client) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"tapedeck_chunks_received", "tapedeck_bytes_received", "tapedeck_upload_latency_seconds",
            "tapedeck_failed_uploads", "tapedeck_webhook_deliveries", "tapedeck_finalize_duration_seconds",
            "tapedeck_stop_to_completed_seconds", "tapedeck_recording_duration_seconds",
            "tapedeck_storage_bytes_written", "tapedeck_task_failures"} <= families


def test_chunk_counts_match_what_was_sent(api, client, rec) -> None:
    before = scrape(client)
    assert api.put_chunk(rec, "alice", "video", 0, WEBM_HEADER).status_code == 202
    assert api.post_chunk(rec, "alice", "video", 1, b"\x01" * 40).status_code == 202
    assert api.post_chunk(rec, "alice", "audio", 0, WEBM_HEADER).status_code == 202
    assert api.put_chunk(rec, "alice", "video", 0, WEBM_HEADER).status_code == 202  # a duplicate counts once
    assert api.put_chunk(rec, "alice", "video", 2, b"").status_code == 400
    after = scrape(client)
    assert delta(before, after, "tapedeck_chunks_received_total", type="video") == 2
    assert delta(before, after, "tapedeck_chunks_received_total", type="audio") == 1
    assert delta(before, after, "tapedeck_bytes_received_total") == 2 * len(WEBM_HEADER) + 40
    assert delta(before, after, "tapedeck_upload_latency_seconds_count") == 3
    assert delta(before, after, "tapedeck_failed_uploads_total", status="400") == 1


def test_finalize_feeds_storage_bytes_and_durations(api, app, client) -> None:
    """A finalize run here (stopped with no task queued): bytes written equal the outputs', one duration each."""
    from app.services import services
    from tests.media import Recording, encode_webm, slice_timeslice
    from workers.finalize import Finalizer

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    before = scrape(client)
    with app.app_context():
        svc = services()
        svc.store.stop(api.room, grace_seconds=0, task_id="manual")
        finalizer = Finalizer(store=svc.store, staging=svc.staging, provider=svc.provider, publisher=svc.events,
                              settings=svc.settings, sleep=lambda _s: None)
        assert finalizer.run(recording_id) == "completed"
    after = scrape(client)
    [output] = api.status(recording_id).get_json()["outputs"]
    written = delta(before, after, "tapedeck_storage_bytes_written_total")
    assert written > output["bytes"]  # the output, its poster and the manifest
    assert delta(before, after, "tapedeck_recording_duration_seconds_count") == 1
    assert delta(before, after, "tapedeck_recording_duration_seconds_sum") == pytest.approx(output["durationSeconds"])
    assert delta(before, after, "tapedeck_stop_to_completed_seconds_count") == 1


def test_redis_facts_are_read_at_scrape_time(api, app, client) -> None:
    """A stopped recording with no finalize queued shows as pending, with its age; Redis answers, queues listed."""
    from app.services import services

    assert api.start().status_code == 201
    with app.app_context():
        services().store.stop(api.room, grace_seconds=0, task_id="manual", now=time.time() - 30)
    samples = scrape(client)
    assert samples[("tapedeck_redis_up", ())] == 1
    assert samples[("tapedeck_pending_finalizes", ())] >= 1
    assert samples[("tapedeck_oldest_pending_finalize_seconds", ())] >= 30
    assert ("tapedeck_queue_depth", (("queue", "celery"),)) in samples


def test_active_recordings_and_participants_are_read_from_redis(api, client) -> None:
    """Gauges any process reads the same: two rooms recording with 2 and 1 participants, then one stops."""
    from tests.conftest import Api

    other = Api(api.client, api.app, f"{api.room}-b")
    before = scrape(client)
    first, second = api.start().get_json()["recordingId"], other.start().get_json()["recordingId"]
    for participant in ("alice", "bob"):
        assert api.put_chunk(first, participant, "video", 0, WEBM_HEADER).status_code == 202
    assert other.put_chunk(second, "carol", "audio", 0, WEBM_HEADER).status_code == 202
    assert api.put_chunk(first, "alice", "video", 1, b"\x01" * 8).status_code == 202  # same participant again
    during = scrape(client)
    assert delta(before, during, "tapedeck_active_recordings") == 2
    assert delta(before, during, "tapedeck_concurrent_participants") == 3
    assert api.client.post(f"/video-calls/{other.room}/recording/pause", headers=other.auth()).status_code == 200
    assert api.stop().status_code == 202
    after = scrape(client)
    assert delta(before, after, "tapedeck_active_recordings") == 1  # paused still counts, stopped does not
    assert delta(before, after, "tapedeck_concurrent_participants") == 1
