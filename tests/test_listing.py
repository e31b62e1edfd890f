"""GET /video-calls/<room>/recordings: newest first, paged by cursor, filtered by state, any token of the room."""
from __future__ import annotations

import pytest


def listing(api, sub="alice", role="participant", room=None, **params):
    return api.client.get(f"/video-calls/{room or api.room}/recordings", query_string=params,
                          headers=api.auth(sub, role, room=room))


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]


@pytest.fixture
def three(api) -> list[str]:
    """Three recordings of the room, oldest first; the last one still recording."""
    ids = []
    for i in range(3):
        ids.append(api.start(format="webm").get_json()["recordingId"])
        if i < 2:
            assert api.stop().status_code == 202
    return ids


def test_newest_first_with_the_listed_fields(api, three):
    body = listing(api).get_json()
    assert [r["recordingId"] for r in body["recordings"]] == three[::-1] and body["next"] is None
    newest = body["recordings"][0]
    assert newest["state"] == "recording" and newest["format"] == "webm" and newest["startedAt"].endswith("Z")
    assert newest["stoppedAt"] is None and newest["completedAt"] is None
    assert set(newest) == {"recordingId", "state", "startedAt", "stoppedAt", "completedAt", "format"}


def test_pages_follow_the_cursor(api, three):
    seen, cursor = [], None
    for _ in range(5):
        body = listing(api, limit=2, **({"cursor": cursor} if cursor else {})).get_json()
        seen.append([r["recordingId"] for r in body["recordings"]])
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == [three[:0:-1], three[:1]]


def test_state_filter(api, three):
    body = listing(api, state="recording").get_json()
    assert [r["recordingId"] for r in body["recordings"]] == [three[2]]
    assert all(r["state"] != "recording" for r in listing(api, state="finalizing").get_json()["recordings"]
               ) and listing(api, state="completed").status_code == 200


def test_a_room_never_recorded_lists_nothing(api):
    assert listing(api).get_json() == {"recordings": [], "next": None}


def test_bad_input_and_other_rooms(api, three):
    error(api.client.get(f"/video-calls/{api.room}/recordings"), 401, "unauthorized")
    for params in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"state": "nope"}, {"cursor": "bad id!"}):
        error(listing(api, **params), 400, "invalid_request")
    error(listing(api, cursor="rec_unknown"), 404, "not_found")
    other = api.client.get(f"/video-calls/{api.room}/recordings", headers=api.auth("alice", "participant", "elsewhere"))
    error(other, 403, "forbidden")


def test_a_filtered_page_reads_a_bounded_span_and_next_reaches_past_it(api):
    """The oldest recording is the only one recording; 11 stopped ones after it fill a page's budget (10 × limit 1):
    the first page is empty with a next, and following next finds it."""
    oldest = api.start().get_json()["recordingId"]
    from app.services import services

    with api.app.app_context():
        client = services().redis
    from workers import keys

    client.hset(keys.recording(oldest), "state", "failed")  # ended; the room may start again
    newer = []
    for _ in range(11):
        newer.append(api.start().get_json()["recordingId"])
        assert api.stop().status_code == 202
    client.hset(keys.recording(oldest), "state", "recording")  # the one match, past the first page's span
    first = listing(api, limit=1, state="recording").get_json()
    assert first["recordings"] == [] and first["next"] == newer[1], first
    second = listing(api, limit=1, state="recording", cursor=first["next"]).get_json()
    assert [r["recordingId"] for r in second["recordings"]] == [oldest] and second["next"] is None, second
