"""The signalling socket against the Procfile's real `web` (gunicorn + gevent): every refusal is an `error` message
with its code, then a close code, never a traceback; each bound of the socket has its test."""
from __future__ import annotations

import json
import time

import pytest
import simple_websocket
from simple_websocket import ConnectionClosed

from app.auth import mint_token
from tests.conftest import JWT_SECRET
from workers.webrtc.messages import MAX_MESSAGE_BYTES
from workers.webrtc.signalling import MAX_MESSAGES

pytestmark = pytest.mark.timeout(120)


class Client(simple_websocket.Client):
    """simple-websocket 1.1's client leaves frames that arrived in the same read as the 101 response unprocessed, and
    loses them when the server closes right after (an early refusal): this one takes them in at the handshake."""

    def handshake(self) -> None:
        super().handshake()
        if self.connected:
            self._handle_events()
            self.connected = True  # a close frame among them: the reader thread then finds the connection ended


def connect(server, room: str, token: str | None) -> Client:
    query = f"?token={token}" if token is not None else ""
    return Client.connect(f"ws://127.0.0.1:{server.port}/video-calls/{room}/signal{query}")


def token(room: str, sub: str = "alice", role: str = "participant", ttl: int = 600) -> str:
    return mint_token(JWT_SECRET, room, sub, role, ttl)


def refused(ws: Client, timeout: float = 15) -> tuple[dict, int]:
    """The error message the server sent, and the close code that followed it."""
    try:
        raw = ws.receive(timeout=timeout)
        assert raw is not None, "no message before the timeout"
        message = json.loads(raw)
        deadline = time.monotonic() + timeout
        while ws.connected and time.monotonic() < deadline:
            extra = ws.receive(timeout=0.5)
            assert extra is None, f"unexpected message after the error: {extra!r}"
    except ConnectionClosed:
        message = locals().get("message")  # closed right after the error
    assert message is not None, "closed without an error message"
    return message, ws.close_reason


def assert_refused(ws: Client, code: str, close: int) -> dict:
    message, reason = refused(ws)
    assert message["type"] == "error" and message["code"] == code, message
    assert message["message"]
    assert reason == close
    return message


def test_missing_bad_and_foreign_tokens(live_gunicorn, room) -> None:
    assert_refused(connect(live_gunicorn, room, None), "unauthorized", 4401)
    assert_refused(connect(live_gunicorn, room, "not-a-jwt"), "unauthorized", 4401)
    assert_refused(connect(live_gunicorn, room, mint_token("another-secret-0123456789abcdef0123", room, "a",
                                                           "participant")), "unauthorized", 4401)
    assert_refused(connect(live_gunicorn, room, token(room, ttl=-5)), "unauthorized", 4401)
    assert_refused(connect(live_gunicorn, room, token("another-room")), "forbidden", 4403)


def test_plain_get_is_400_not_500(live_gunicorn, room) -> None:
    reply = live_gunicorn.request("GET", f"/video-calls/{room}/signal?token={token(room)}")
    assert reply.status == 400 and reply.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("frame,code", [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_message"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "offer"}', "bad_message"),
    ('{"type": "offer", "sdp": "v=0\\r\\ns=-\\r\\n"}', "no_media"),
    ('{"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}', "bad_message"),
    ('{"type": "offer", "sdp": "' + "x" * (MAX_MESSAGE_BYTES + 10) + '"}', "message_too_large"),
])
def test_bad_messages(live_gunicorn, room, frame: str, code: str) -> None:
    ws = connect(live_gunicorn, room, token(room))
    ws.send(frame)
    assert_refused(ws, code, 4400)


def test_frame_far_above_the_bound_is_cut_by_the_socket_layer(live_gunicorn, room) -> None:
    ws = connect(live_gunicorn, room, token(room))
    ws.send("x" * (2 * MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ConnectionClosed):
        while True:
            assert ws.receive(timeout=10) is None or True
    assert ws.close_reason == 1009


def test_offer_that_does_not_parse_is_refused(live_gunicorn, room) -> None:
    ws = connect(live_gunicorn, room, token(room))
    ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\ngarbage\r\n"}))
    assert_refused(ws, "bad_message", 4400)


def test_message_rate_bound(live_gunicorn, room) -> None:
    ws = connect(live_gunicorn, room, token(room))
    refresh = json.dumps({"type": "token", "token": token(room)})
    for _ in range(MAX_MESSAGES):
        ws.send(refresh)
    for _ in range(MAX_MESSAGES):
        assert json.loads(ws.receive(timeout=10))["type"] == "token"
    ws.send(refresh)
    assert_refused(ws, "rate_limited", 4429)


def test_sockets_per_token_bound(live_gunicorn, room) -> None:
    shared = token(room, sub="bob")
    held = [connect(live_gunicorn, room, shared) for _ in range(2)]  # RTC_MAX_SOCKETS_PER_TOKEN default
    for ws in held:
        ws.send(json.dumps({"type": "token", "token": shared}))
        assert json.loads(ws.receive(timeout=10))["type"] == "token"  # both really open
    assert_refused(connect(live_gunicorn, room, shared), "rate_limited", 4429)
    held[0].close()
    time.sleep(0.5)
    again = connect(live_gunicorn, room, shared)  # a closed socket frees its slot
    again.send(json.dumps({"type": "token", "token": shared}))
    assert json.loads(again.receive(timeout=10))["type"] == "token"
    for ws in (held[1], again):
        ws.close()


def test_refresh_must_keep_room_and_subject(live_gunicorn, room) -> None:
    ws = connect(live_gunicorn, room, token(room))
    ws.send(json.dumps({"type": "token", "token": token(room, sub="mallory")}))
    assert_refused(ws, "forbidden", 4403)
    ws = connect(live_gunicorn, room, token(room))
    ws.send(json.dumps({"type": "token", "token": "garbage"}))
    assert_refused(ws, "unauthorized", 4401)


def test_unrefreshed_token_expires_and_refresh_extends(live_gunicorn, room) -> None:
    ws = connect(live_gunicorn, room, token(room, ttl=3))
    ws.send(json.dumps({"type": "token", "token": token(room, ttl=5)}))
    reply = json.loads(ws.receive(timeout=10))
    assert reply["type"] == "token" and reply["expiresAt"] > time.time() + 3
    time.sleep(3.5)
    assert ws.connected  # past the first token's expiry: the refresh kept it open
    assert_refused(ws, "token_expired", 4401)


def test_many_open_sockets_are_not_capped_by_a_thread_pool(live_gunicorn, room) -> None:
    """40 sockets open at once (the thread worker it replaced froze at 2 x 16): every one answers, and so does HTTP."""
    sockets = [connect(live_gunicorn, room, token(room, sub=f"guest{i}")) for i in range(40)]
    try:
        for i, ws in enumerate(sockets):
            ws.send(json.dumps({"type": "token", "token": token(room, sub=f"guest{i}")}))
        assert all(json.loads(ws.receive(timeout=20))["type"] == "token" for ws in sockets)
        assert live_gunicorn.request("GET", "/healthz").status == 200
    finally:
        for ws in sockets:
            ws.close()
