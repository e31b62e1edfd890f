"""Progress as a user watches it: SSE from start to completed, resumable with Last-Event-ID, and Celery PROGRESS."""
from __future__ import annotations

import json

from tests.media import Recording, encode_webm, slice_timeslice


def read_sse(response) -> list[dict]:
    """Parse a finished text/event-stream body into events with their ids."""
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append({"id": fields.get("id"), "event": fields["event"], **json.loads(fields["data"])})
    return events


def test_event_stream_follows_finalize_to_the_end_and_resumes(api, worker):
    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    api.stop()
    url = f"/video-calls/recordings/{recording_id}/events?token={api.token('alice', 'participant')}"
    response = api.client.get(url)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = read_sse(response)
    states = [e["state"] for e in events]
    assert states[0] == "recording" and "finalizing" in states and "muxing" in states and "uploading" in states
    assert events[-1] == {**events[-1], "event": "state", "state": "completed"}
    progress = [e["progress"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert len({e["id"] for e in events}) == len(events)

    middle = events[len(events) // 2]
    resumed = read_sse(api.client.get(url, headers={"Last-Event-ID": middle["id"]}))
    assert [e["id"] for e in resumed] == [e["id"] for e in events[len(events) // 2 + 1:]]


def test_event_stream_rejects_bad_requests(api):
    recording_id = api.start().get_json()["recordingId"]
    base = f"/video-calls/recordings/{recording_id}/events"
    assert api.client.get(base).status_code == 401
    assert api.client.get(f"{base}?token={api.token()}", headers={"Last-Event-ID": "x"}).status_code == 400
    other = api.token("host", "host", room="other-room")
    assert api.client.get(f"{base}?token={other}").status_code == 403
    assert api.client.get(f"/video-calls/recordings/rec_none/events?token={api.token()}").status_code == 404


def test_celery_task_reports_progress_and_result(api, worker):
    from celery.result import AsyncResult

    from tasks import celery_app

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)):
        api.put_chunk(recording_id, "alice", "video", sequence, piece)
    pubsub = celery_app.backend.client.pubsub()
    task_id = api.stop().get_json()["taskId"]
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    api.wait_final(recording_id)
    seen = []
    while (message := pubsub.get_message(timeout=2)) is not None:
        if message["type"] == "message":
            seen.append(json.loads(message["data"])["status"])
    assert "PROGRESS" in seen and seen[-1] == "SUCCESS"
    assert AsyncResult(task_id, app=celery_app).get(timeout=10) == {"recordingId": recording_id, "state": "completed"}


def test_pubsub_channel_carries_live_events(api, app, worker):
    from app.services import services
    from workers import keys

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)):
        api.put_chunk(recording_id, "alice", "video", sequence, piece)
    with app.app_context():
        pubsub = services().redis.pubsub()
    pubsub.subscribe(keys.events_channel(recording_id))
    api.stop()
    api.wait_final(recording_id)
    live = []
    while (message := pubsub.get_message(timeout=2)) is not None:
        if message["type"] == "message":
            live.append(json.loads(message["data"]))
    assert [e["state"] for e in live if e["type"] == "state"] == ["finalizing", "completed"]
    assert next(e for e in live if e["type"] == "state")["stopReason"] == "host"  # as beat and operator stops say theirs
    assert all(e["id"] for e in live)


def test_a_second_delivery_produces_the_output_once(api, app, worker):
    """Deliveries while one holds the lock skip; a delivery after completion rewrites nothing."""
    from celery.result import AsyncResult

    from app.services import services
    from tasks import celery_app
    from tasks.finalize import enqueue_finalize
    from workers import keys

    def delivery(task_id: str) -> dict:
        enqueue_finalize(recording_id, task_id)
        return AsyncResult(task_id, app=celery_app).get(timeout=30)

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    with app.app_context():
        client = services().redis
    lock = keys.finalize_lock(recording_id)
    client.set(lock, "a-running-delivery", ex=60)  # as if the first delivery were still at work
    try:
        task_id = api.stop().get_json()["taskId"]
        assert AsyncResult(task_id, app=celery_app).get(timeout=30) == {"recordingId": recording_id, "skipped": "already running"}
        assert delivery(f"duplicate-{recording_id}") == {"recordingId": recording_id, "skipped": "already running"}
        assert api.status(recording_id).get_json()["state"] not in ("completed", "failed")
    finally:
        client.delete(lock)
    assert delivery(f"redelivered-{recording_id}") == {"recordingId": recording_id, "state": "completed"}
    body = api.status(recording_id).get_json()
    assert body["state"] == "completed" and len(body["outputs"]) == 1
    output = api.output_path(body, "alice")
    written = (output.stat().st_mtime_ns, output.read_bytes())
    assert delivery(f"late-{recording_id}") == {"recordingId": recording_id, "state": "completed"}
    assert (output.stat().st_mtime_ns, output.read_bytes()) == written  # the late delivery uploaded nothing
    unsigned = lambda outputs: [{k: v for k, v in o.items() if k not in ("url", "thumbnailUrl")} for o in outputs]  # noqa: E731
    assert unsigned(api.status(recording_id).get_json()["outputs"]) == unsigned(body["outputs"])
    events = read_sse(api.client.get(f"/video-calls/recordings/{recording_id}/events?token={api.token()}"))
    assert [e["state"] for e in events if e["event"] == "state"].count("completed") == 1
    assert [e["state"] for e in events].count("muxing") >= 1


def test_a_participant_s_stream_does_not_name_the_others(api, worker):
    """Found from outside: alice's EventSource carried `participantId: "bob"` on finalize progress, naming everyone
    in the call, where her status shows only her own entry (DESIGN §4). A host's stream still names each one."""
    recording_id = api.start().get_json()["recordingId"]
    for participant in ("alice", "bob"):
        for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 3)):
            assert api.put_chunk(recording_id, participant, "video", sequence, piece).status_code == 202
    api.stop()
    url = f"/video-calls/recordings/{recording_id}/events"
    alice = read_sse(api.client.get(f"{url}?token={api.token('alice', 'participant')}"))
    host = read_sse(api.client.get(f"{url}?token={api.token('host', 'host')}"))
    assert alice[-1]["state"] == "completed" and host[-1]["state"] == "completed"
    assert {e.get("participantId") for e in host} >= {"alice", "bob"}
    assert {e.get("participantId") for e in alice} <= {"alice", None}
    assert "bob" not in json.dumps(alice)
    assert [e["id"] for e in alice] == [e["id"] for e in host]  # the same events, progress included
