"""The raw chunk PUT's lane (app/chunk_lane.py) answers as the Flask view it stands in front of: each request is sent
once through the app as clients reach it (the lane) and once straight to Flask's wsgi_app (the view), and the two
answers must be equal — status, JSON body, headers — for every error the route has, and alike for a 202. A spy on
Flask's wsgi_app shows which requests the lane answered itself and which it left to Flask."""
from __future__ import annotations

import base64
import hashlib
import time
import uuid

import jwt
import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from tests.conftest import JWT_SECRET
from tests.media import WEBM_HEADER

BODY = WEBM_HEADER + b"\x1f\x43\xb6\x75" + bytes(200)


class Spy:
    """Flask's wsgi_app, counting the requests the lane handed to it."""

    def __init__(self, wsgi) -> None:  # type: ignore[no-untyped-def]
        self.wsgi, self.calls = wsgi, 0

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.wsgi(environ, start_response)


def spied_app(stack_env, rate: str, **settings: str):  # type: ignore[no-untyped-def]
    from app import create_app

    app = create_app({**stack_env, "CHUNK_RATE_LIMIT": rate, **settings})
    app.wsgi_app.flask_wsgi = Spy(app.wsgi_app.flask_wsgi)
    return app


@pytest.fixture(scope="module")
def lane_app(stack_env):
    return spied_app(stack_env, "1000/minute")


def sides_of(app) -> tuple:  # type: ignore[no-untyped-def]
    """(through the lane, straight to the view, the spy)."""
    spy = app.wsgi_app.flask_wsgi
    return app.test_client(), Client(spy.wsgi, Response), spy


@pytest.fixture
def sides(lane_app):
    return sides_of(lane_app)


def token(room: str, sub: str, role: str = "participant", **claims) -> str:
    from app.auth import mint_token

    if claims:
        now = int(time.time())
        return jwt.encode({"sub": sub, "room": room, "role": role, "exp": now + 60, **claims}, JWT_SECRET,
                          algorithm="HS256")
    return mint_token(JWT_SECRET, room, sub, role, 600)


def started(client, room: str) -> str:
    answer = client.post(f"/video-calls/{room}/recording/start", headers={"Authorization": f"Bearer {token(room, 'host', 'host')}"})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["recordingId"]


def put(client, path: str, data: bytes = BODY, headers: dict | None = None):  # type: ignore[no-untyped-def]
    """A PUT as gunicorn hands it over: with its Content-Length, 0 too (werkzeug's test client leaves 0 out)."""
    return client.put(path, data=data, headers={"X-Request-Id": "lane-test-1", **(headers or {})},
                      environ_overrides={"CONTENT_LENGTH": str(len(data))})


def answer_of(response) -> tuple:  # type: ignore[no-untyped-def]
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, response.get_data(), headers


def same(sides, path: str, data: bytes = BODY, headers: dict | None = None, lane_answers: bool = True) -> tuple:
    """Both answers to one request, asserted equal; `lane_answers`: the lane answered without Flask's wsgi_app."""
    lane, view, spy = sides
    before = spy.calls
    through_lane = put(lane, path, data, headers)
    assert spy.calls == before + (0 if lane_answers else 1)
    direct = put(view, path, data, headers)
    assert answer_of(through_lane) == answer_of(direct)
    return answer_of(through_lane)


def chunk_path(rec: str, participant: str = "alice", kind: str = "video", sequence: object = 0) -> str:
    return f"/video-calls/recordings/{rec}/participants/{participant}/{kind}/chunks/{sequence}"


def test_every_error_of_the_route_is_the_views(sides, lane_app):
    room = f"lane-{uuid.uuid4().hex[:8]}"
    rec = started(sides[0], room)
    auth = {"Authorization": f"Bearer {token(room, 'alice')}"}
    now = int(time.time())
    cases = [
        ({}, chunk_path(rec), 401),
        ({"Authorization": "Basic abc"}, chunk_path(rec), 401),
        ({"Authorization": "Bearer not-a-jwt"}, chunk_path(rec), 401),
        ({"Authorization": f"Bearer {token(room, 'alice', exp=now - 5)}"}, chunk_path(rec), 401),
        ({"Authorization": f"Bearer {token(room, 'alice', role='admin')}"}, chunk_path(rec), 401),
        (auth, chunk_path("rec bad"), 400),
        (auth, chunk_path(rec, participant="a" * 200), 400),
        (auth, chunk_path(rec, kind="screen2"), 400),
        (auth, chunk_path(rec, sequence=-1), 400),
        (auth, chunk_path(rec, sequence="1e3"), 400),
        (auth, chunk_path(rec, sequence=10**30), 400),
        ({**auth, "Tapedeck-Timestamp": "Infinity"}, chunk_path(rec), 400),
        ({**auth, "Tapedeck-Timestamp": "soon"}, chunk_path(rec), 400),
        ({**auth, "Tapedeck-Final": "maybe"}, chunk_path(rec), 400),
        ({**auth, "Repr-Digest": "sha-256=:nope:"}, chunk_path(rec), 400),
        ({**auth, "Repr-Digest": f"sha-256=:{base64.b64encode(bytes(32)).decode()}:"}, chunk_path(rec), 400),
        (auth, chunk_path(rec, participant="bob"), 403),
        (auth, chunk_path("rec_" + "0" * 32), 404),
    ]
    for headers, path, status in cases:
        code, body, _ = same(sides, path, headers=headers)
        assert code == status, (path, headers, body)
    code, body, _ = same(sides, chunk_path(rec), data=b"", headers=auth)  # an empty body
    assert code == 400 and b"must not be empty" in body
    huge = lane_app.extensions["tapedeck"].settings.max_chunk_bytes + 1
    code, _, headers = same(sides, chunk_path(rec), data=bytes(huge), headers=auth)
    assert code == 413
    assert ("X-Request-Id", "lane-test-1") in headers


def test_a_rejected_chunk_counts_against_the_rate_and_429_wins(stack_env):
    """3/minute: the lane's and the view's requests count in one window; the fourth request is 429 with
    Retry-After, whichever side it takes, even when it is also malformed (DESIGN §4: rate before the rest)."""
    sides = sides_of(spied_app(stack_env, "3/minute"))
    room = f"lane-{uuid.uuid4().hex[:8]}"
    rec = started(sides[0], room)
    lane, view, _ = sides
    auth = {"Authorization": f"Bearer {token(room, 'alice')}"}
    assert put(lane, chunk_path(rec, sequence="x"), headers=auth).status_code == 400
    assert put(view, chunk_path(rec, sequence="x"), headers=auth).status_code == 400
    assert put(lane, chunk_path(rec), headers=auth).status_code == 202
    for client in (lane, view, lane):
        refused = put(client, chunk_path(rec, sequence="x"), headers=auth)
        assert refused.status_code == 429, refused.get_json()
        assert refused.get_json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1


def test_conflict_and_unexpected_errors_are_the_views(sides, lane_app, monkeypatch):
    room = f"lane-{uuid.uuid4().hex[:8]}"
    lane, view, _ = sides
    rec = started(lane, room)
    assert put(lane, chunk_path(rec, "alice"), headers={"Authorization": f"Bearer {token(room, 'alice')}"}).status_code == 202
    code, body, _ = same(sides, chunk_path(rec, "alice"), data=BODY + b"x",
                         headers={"Authorization": f"Bearer {token(room, 'alice')}"})
    assert code == 409 and b"sequence_conflict" in body

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lane_app.extensions["tapedeck"].intake, "accept", broken)
    code, body, headers = same(sides, chunk_path(rec, "bob"), headers={"Authorization": f"Bearer {token(room, 'bob')}"})
    assert code == 500 and b"internal_error" in body and b"disk on fire" not in body


def test_a_stored_chunk_is_answered_alike(sides, lane_app):
    """202 with the same body and headers (the sequence aside) and the chunk stored: each side stores its own."""
    room = f"lane-{uuid.uuid4().hex[:8]}"
    lane, view, spy = sides
    rec = started(lane, room)
    headers = {"Authorization": f"Bearer {token(room, 'alice')}", "Tapedeck-Timestamp": "1700000000000",
               "Repr-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(BODY).digest()).decode()}:"}
    before = spy.calls
    first = put(lane, chunk_path(rec, sequence=0), headers=headers)
    assert spy.calls == before
    second = put(view, chunk_path(rec, sequence=1), headers=headers)
    assert first.status_code == second.status_code == 202
    assert {**first.get_json(), "sequence": 1} == second.get_json()
    assert answer_of(first)[2] == answer_of(second)[2]  # Content-Type, Content-Length, X-Request-Id
    again = put(lane, chunk_path(rec, sequence=0), headers=headers)
    assert again.status_code == 202 and again.get_json()["duplicate"] is True
    status = lane.get(f"/video-calls/recordings/{rec}", headers={"Authorization": f"Bearer {token(room, 'host', 'host')}"})
    stream = status.get_json()["participants"]["alice"]["video"]
    assert stream["chunks"] == 2 and stream["bytes"] == 2 * len(BODY), stream


def test_requests_the_lane_leaves_to_flask(sides, stack_env):
    """Bodies without a Content-Length, other methods, and with CORS_ORIGINS set every request (flask-cors writes
    its headers on answers with or without an Origin) take the view."""
    room = f"lane-{uuid.uuid4().hex[:8]}"
    lane, _, spy = sides
    rec = started(lane, room)
    auth = {"Authorization": f"Bearer {token(room, 'alice')}"}
    before = spy.calls
    chunked = lane.put(chunk_path(rec, sequence=0), headers={**auth, "Transfer-Encoding": "chunked"}, data=BODY)
    assert chunked.status_code in (202, 400), chunked.get_json()  # as werkzeug reads a body it cannot size
    assert lane.get(chunk_path(rec, sequence=0), headers=auth).status_code == 405
    assert spy.calls == before + 2
    cors_lane, _, cors_spy = sides_of(spied_app(stack_env, "1000/minute", CORS_ORIGINS="https://app.example"))
    for sequence, origin in enumerate(({}, {"Origin": "https://app.example"})):
        answer = put(cors_lane, chunk_path(rec, sequence=sequence), headers={**auth, **origin})
        assert answer.status_code == 202 and answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert cors_spy.calls == 2
