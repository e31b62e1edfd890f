"""GET …/<type>/chunks: the runs of sequences the server holds, bounded and paged, for the participant or a host."""
from __future__ import annotations

import pytest

from tests.media import WEBM_HEADER


def held(api, rec, participant="alice", sub="alice", role="participant", kind="video", **params):
    url = f"/video-calls/recordings/{rec}/participants/{participant}/{kind}/chunks"
    return api.client.get(url, query_string=params, headers=api.auth(sub, role))


def upload(api, rec, sequences, participant="alice"):
    for seq in sequences:
        data = WEBM_HEADER if seq == 0 else bytes([seq % 256]) * 10
        assert api.put_chunk(rec, participant, "video", seq, data).status_code == 202


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]


def test_ranges_after_gaps_are_compact_runs(api, rec):
    upload(api, rec, [0, 1, 2, 5, 6, 9, 3, 12])
    body = held(api, rec).get_json()
    assert body == {"ranges": [[0, 3], [5, 6], [9, 9], [12, 12]], "chunks": 8,
                    "bytes": len(WEBM_HEADER) + 70, "next": None}


def test_a_host_sees_any_participant_and_an_empty_stream_is_empty(api, rec):
    upload(api, rec, [0, 1])
    assert held(api, rec, sub="host", role="host").get_json()["ranges"] == [[0, 1]]
    assert held(api, rec, kind="audio").get_json() == {"ranges": [], "chunks": 0, "bytes": 0, "next": None}


def test_pages_follow_next_until_null(api, rec):
    upload(api, rec, [0, 1, 3, 5, 6, 8])
    pages, after = [], None
    for _ in range(10):
        params = {"limit": 2, **({"after": after} if after is not None else {})}
        body = held(api, rec, **params).get_json()
        pages.append(body["ranges"])
        after = body["next"]
        if after is None:
            break
    assert pages == [[[0, 1], [3, 3]], [[5, 6], [8, 8]]]
    assert held(api, rec, after=5).get_json()["ranges"] == [[6, 6], [8, 8]]


def test_bad_input_and_access_in_order(api, rec):
    upload(api, rec, [0])
    url = f"/video-calls/recordings/{rec}/participants/alice/video/chunks"
    error(api.client.get(url), 401, "unauthorized")
    error(held(api, rec, kind="screen"), 400, "invalid_request")
    error(held(api, rec, participant="bad id!"), 400, "invalid_request")
    for params in ({"after": "-1"}, {"after": "x"}, {"after": "10000001"}, {"limit": "0"}, {"limit": "1001"}):
        error(held(api, rec, **params), 400, "invalid_request")
    error(held(api, "rec_missing"), 404, "not_found")
    error(held(api, rec, sub="bob"), 403, "forbidden")
    other = api.client.get(url, headers=api.auth("alice", "participant", room="another-room"))
    error(other, 403, "forbidden")
