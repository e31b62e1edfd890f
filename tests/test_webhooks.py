"""Webhook outbox against real Redis and a loopback HTTP receiver: down, then 503, then 200 — all arrive once, in order."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from workers.webhooks import deliver_due, enqueue_webhook, list_deliveries, verify

SECRET = "whsec_test"


class Receiver:
    """A real socket that answers each POST with the next scripted status and records what arrived."""

    def __init__(self, port: int, statuses: list[int], location: str = "") -> None:
        self.received: list[tuple[bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, self.headers["Tapedeck-Signature"]))
                self.send_response(statuses.pop(0) if statuses else 200)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rdb(stack_env):
    client = redis.Redis.from_url(stack_env["REDIS_URL"])
    yield client
    client.close()


def test_down_then_503_then_200_delivers_everything_once_in_order(rdb):
    rec, port = f"rec_wh_{free_port()}", free_port()
    url = f"http://127.0.0.1:{port}/hook"
    for event in ("recording.started", "recording.completed"):
        enqueue_webhook(rdb, rec, event, "roomA", {"n": event}, now=1000.0)
    wait = deliver_due(rdb, rec, url, SECRET, now=1000.0, timeout=2)  # nothing listens: refused
    first = list_deliveries(rdb, rec)[0]
    assert wait and wait > 0 and first.attempts == 1 and first.lastStatus is None and first.state == "pending"
    assert list_deliveries(rdb, rec)[1].attempts == 0  # the second waits for the first
    receiver = Receiver(port, [503])
    try:
        assert deliver_due(rdb, rec, url, SECRET, now=1000.0, timeout=2) == pytest.approx(wait)  # not due yet
        wait = deliver_due(rdb, rec, url, SECRET, now=1000.0 + wait, timeout=2)
        assert list_deliveries(rdb, rec)[0].lastStatus == 503 and wait > 0
        assert deliver_due(rdb, rec, url, SECRET, now=5000.0, timeout=2) is None
    finally:
        receiver.close()
    events = [json.loads(body)["type"] for body, _ in receiver.received]
    assert events == ["recording.started", "recording.started", "recording.completed"]
    assert all(verify(SECRET, body, sig) for body, sig in receiver.received)
    assert not verify("other", *receiver.received[-1])
    done = list_deliveries(rdb, rec)
    assert [(d.state, d.attempts, d.lastStatus) for d in done] == [("delivered", 3, 200), ("delivered", 1, 200)]
    body = json.loads(receiver.received[-1][0])
    assert body["recordingId"] == rec and body["room"] == "roomA" and body["data"] == {"n": "recording.completed"}


def test_a_redirect_is_not_followed(rdb):
    rec, port, target_port = f"rec_wh_{free_port()}", free_port(), free_port()
    target = Receiver(target_port, [])
    receiver = Receiver(port, [302], location=f"http://127.0.0.1:{target_port}/elsewhere")
    try:
        enqueue_webhook(rdb, rec, "recording.started", "roomB", {}, now=0.0)
        assert deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=0.0, timeout=2) > 0
    finally:
        receiver.close()
        target.close()
    assert len(receiver.received) == 1 and target.received == []
    assert list_deliveries(rdb, rec)[0].lastStatus == 302


def test_no_url_configured_sends_nothing(rdb):
    rec = f"rec_wh_{free_port()}"
    enqueue_webhook(rdb, rec, "recording.started", "roomC", {}, now=0.0)
    assert deliver_due(rdb, rec, None, SECRET, now=0.0) is None
    assert list_deliveries(rdb, rec)[0].attempts == 0


def test_gives_up_after_the_window(rdb):
    rec, port = f"rec_wh_{free_port()}", free_port()
    enqueue_webhook(rdb, rec, "recording.failed", "roomD", {}, now=0.0)
    enqueue_webhook(rdb, rec, "recording.deleted", "roomD", {}, now=0.0)
    receiver = Receiver(port, [500])
    try:
        deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=100.0, timeout=2, give_up_after=50)
    finally:
        receiver.close()
    assert [d.state for d in list_deliveries(rdb, rec)] == ["given_up", "delivered"]


def test_webhook_settings_defaults_and_bounds():
    from workers.errors import ConfigurationError
    from workers.settings import Settings

    base = {"TAPEDECK_ENV": "development"}
    s = Settings.from_env(base)
    assert s.webhook_url is None and s.webhook_give_up_seconds == 86400
    s = Settings.from_env({**base, "WEBHOOK_URL": " https://hooks.example/x ", "WEBHOOK_SECRET": "k"})
    assert s.webhook_url == "https://hooks.example/x" and s.webhook_secret == "k"
    with pytest.raises(ConfigurationError):
        Settings.from_env({**base, "WEBHOOK_GIVE_UP_SECONDS": "5"})
    with pytest.raises(ConfigurationError):
        Settings.from_env({**base, "WEBHOOK_TIMEOUT_SECONDS": "0"})


def test_an_event_enters_the_outbox_once(rdb):
    rec = f"rec_wh_{free_port()}"
    assert enqueue_webhook(rdb, rec, "recording.completed", "roomE", {}, now=0.0) is not None
    assert enqueue_webhook(rdb, rec, "recording.completed", "roomE", {}, now=1.0) is None  # a redelivered finalize
    assert [d.event for d in list_deliveries(rdb, rec)] == ["recording.completed"]


def test_start_puts_recording_started_in_the_outbox_and_it_arrives_signed(stack_env, rdb, room):
    from app import create_app
    from tests.conftest import Api

    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    hooked = create_app({**stack_env, "WEBHOOK_URL": url, "WEBHOOK_SECRET": SECRET})
    api = Api(hooked.test_client(), hooked, room)
    response = api.client.post(f"/video-calls/{room}/recording/start", headers=api.auth(), json={})
    assert response.status_code == 201
    rec = response.get_json()["recordingId"]
    assert [d.event for d in list_deliveries(rdb, rec)] == ["recording.started"]
    receiver = Receiver(port, [])
    try:
        assert deliver_due(rdb, rec, url, SECRET, now=list_deliveries(rdb, rec)[0].createdAt, timeout=2) is None
    finally:
        receiver.close()
    (body, signature), = receiver.received
    assert verify(SECRET, body, signature)
    assert json.loads(body)["room"] == room and json.loads(body)["data"]["format"] == "webm"


def test_without_a_url_start_keeps_no_outbox(client, api, rdb, room):
    response = client.post(f"/video-calls/{room}/recording/start", headers=api.auth(), json={})
    assert response.status_code == 201
    assert list_deliveries(rdb, response.get_json()["recordingId"]) == []


def test_cli_lists_and_replays_a_given_up_delivery(app, rdb):
    rec, port = f"rec_wh_{free_port()}", free_port()
    enqueue_webhook(rdb, rec, "recording.failed", "roomF", {}, now=0.0)
    deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=10.0, timeout=2, give_up_after=5)  # refused
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["webhooks", "list", rec])
    assert listed.exit_code == 0
    (line,) = [json.loads(x) for x in listed.output.splitlines()]
    assert line["event"] == "recording.failed" and line["state"] == "given_up" and line["attempts"] == 1
    replayed = runner.invoke(args=["webhooks", "replay", rec])
    assert replayed.exit_code == 0 and "replaying 1" in replayed.output
    assert list_deliveries(rdb, rec)[0].state == "pending"
    assert runner.invoke(args=["webhooks", "list", "bad/id"]).exit_code != 0


def test_status_shows_the_hosts_the_deliveries(stack_env, rdb, room):
    from app import create_app
    from tests.conftest import Api

    hooked = create_app({**stack_env, "WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/h", "WEBHOOK_SECRET": SECRET})
    api = Api(hooked.test_client(), hooked, room)
    rec = api.client.post(f"/video-calls/{room}/recording/start", headers=api.auth(), json={}).get_json()["recordingId"]
    host = api.client.get(f"/video-calls/recordings/{rec}", headers=api.auth()).get_json()
    (entry,) = host["webhooks"]
    assert entry["event"] == "recording.started" and entry["state"] == "pending" and entry["attempts"] == 0
    assert set(entry) >= {"attempts", "lastStatus", "nextAttemptAt", "state"}
    guest = api.client.get(f"/video-calls/recordings/{rec}", headers=api.auth("bob", "participant")).get_json()
    assert guest["webhooks"] == []


def test_the_readme_verification_snippet_accepts_our_signature():
    from pathlib import Path

    from workers.webhooks import sign

    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    code = readme.split("## Operating tapedeck: webhooks")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the snippet users copy
    body, now = b'{"type":"recording.started"}', int(__import__("time").time())
    assert namespace["verify"](SECRET, body, sign(SECRET, body, now))
    assert not namespace["verify"]("other", body, sign(SECRET, body, now))
    assert not namespace["verify"](SECRET, body, sign(SECRET, body, now - 3600))


def test_deliveries_are_counted_by_outcome(rdb):
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("tapedeck_webhook_deliveries_total", {"outcome": outcome}) or 0.0

    rec, port = f"rec_wh_{free_port()}", free_port()
    enqueue_webhook(rdb, rec, "recording.started", "roomG", {}, now=0.0)
    before = {o: count(o) for o in ("delivered", "retry")}
    deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=0.0, timeout=2)  # refused
    receiver = Receiver(port, [])
    try:
        deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=10_000.0, timeout=2)
    finally:
        receiver.close()
    assert count("retry") - before["retry"] == 1 and count("delivered") - before["delivered"] == 1


def test_download_urls_are_minted_when_sent_not_when_queued(rdb):
    """Found from outside: recording.completed carried the links minted when finalize queued it, so a receiver
    down longer than DOWNLOAD_URL_TTL_SECONDS (or a replay after give-up) got dead links. DESIGN: minted when sent;
    the signature covers the bytes actually sent."""
    rec, port = f"rec_wh_{free_port()}", free_port()
    url = f"http://127.0.0.1:{port}/hook"
    queued = {"state": "completed", "outputs": [
        {"participantId": "alice", "key": "recordings/r/alice.webm", "url": "http://old/alice?expires=1",
         "thumbnailKey": "recordings/r/alice.jpg", "thumbnailUrl": "http://old/alice.jpg?expires=1"},
        {"participantId": "bob", "key": "recordings/r/bob.webm", "url": "http://old/bob?expires=1", "thumbnailKey": None,
         "thumbnailUrl": None}]}
    enqueue_webhook(rdb, rec, "recording.completed", "roomU", queued, now=1000.0)
    sent_at = {"now": 1000}

    def url_for(key: str) -> str:
        return f"http://fresh/{key}?at={sent_at['now']}"

    deliver_due(rdb, rec, url, SECRET, now=1000.0, timeout=2, url_for=url_for)  # receiver down: nothing sent
    receiver = Receiver(port, [])
    sent_at["now"] = 9000
    try:
        assert deliver_due(rdb, rec, url, SECRET, now=9000.0, timeout=2, url_for=url_for) is None
    finally:
        receiver.close()
    [(body, signature)] = receiver.received
    assert verify(SECRET, body, signature)
    outputs = json.loads(body)["data"]["outputs"]
    assert [(o["url"], o["thumbnailUrl"]) for o in outputs] == [
        ("http://fresh/recordings/r/alice.webm?at=9000", "http://fresh/recordings/r/alice.jpg?at=9000"),
        ("http://fresh/recordings/r/bob.webm?at=9000", None)]
    assert json.loads(list_deliveries(rdb, rec)[0].body)["data"] == queued  # the outbox keeps what was queued


def test_a_link_the_provider_cannot_mint_now_keeps_the_queued_one(rdb):
    rec, port = f"rec_wh_{free_port()}", free_port()
    queued = {"outputs": [{"key": "k", "url": "http://queued/k", "thumbnailKey": None, "thumbnailUrl": None}]}
    enqueue_webhook(rdb, rec, "recording.completed", "roomV", queued, now=0.0)
    receiver = Receiver(port, [])
    try:
        deliver_due(rdb, rec, f"http://127.0.0.1:{port}/", SECRET, now=0.0, timeout=2, url_for=lambda key: None)
    finally:
        receiver.close()
    assert json.loads(receiver.received[0][0])["data"]["outputs"][0]["url"] == "http://queued/k"
