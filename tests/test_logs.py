"""Logs: a request's lines carry its ids as JSON; X-Request-Id is echoed when plain, replaced when not."""
from __future__ import annotations

import json
import logging
import re

import pytest

from workers import logs


def line_during(app, path: str, headers: dict[str, str]) -> dict:
    """The JSON line a log call writes while the request for path is being served (hooks run, view not)."""
    with app.test_request_context(path, method="PUT", headers=headers):
        app.preprocess_request()
        record = logging.LogRecord("tapedeck.test", logging.INFO, __file__, 1, "chunk %s", ("stored",), None)
        line = logs.formatter("json").format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_request_line_carries_its_ids(app) -> None:
    line = line_during(app, "/video-calls/recordings/rec_abc/participants/alice/video/chunks/3",
                       {"X-Request-Id": "req-123"})
    assert line["message"] == "chunk stored" and line["level"] == "INFO" and line["logger"] == "tapedeck.test"
    assert (line["request_id"], line["recording_id"], line["participant_id"]) == ("req-123", "rec_abc", "alice")
    assert "room" not in line  # not in this URL: absent, not null


def test_ids_do_not_leak_into_the_next_request(app, client) -> None:
    client.get("/video-calls/recordings/rec_abc", headers={"X-Request-Id": "first"})
    assert logs.current() == {}


@pytest.mark.parametrize("supplied", ["has space", "x" * 129, "semi;colon", "new\\nline", ""])
def test_a_bad_request_id_is_replaced(client, supplied: str) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": supplied} if supplied else {})
    echoed = response.headers["X-Request-Id"]
    assert echoed != supplied and re.fullmatch(r"[0-9a-f]{16}", echoed)


def test_a_plain_request_id_is_echoed(client) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "lb-7f3a:42"}).headers["X-Request-Id"] == "lb-7f3a:42"


def test_text_format_appends_the_ids() -> None:
    logs.bind(request_id="r1", task_id="t1")
    try:
        record = logging.LogRecord("tapedeck.test", logging.WARNING, __file__, 1, "hello", (), None)
        assert logs.formatter("text").format(record).endswith("hello [request_id=r1 task_id=t1]")
    finally:
        logs.clear()


def test_log_format_is_bounded() -> None:
    from workers.errors import ConfigurationError
    from workers.settings import Settings

    base = {"JWT_SECRET": "x" * 32}
    assert Settings.from_env(base).log_format == "json"
    assert Settings.from_env({**base, "TAPEDECK_ENV": "development"}).log_format == "text"
    assert Settings.from_env({**base, "LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        Settings.from_env({**base, "LOG_FORMAT": "xml"})


class Lines(logging.Handler):
    """Formats each record as it is emitted (inside its request, as the process's stderr handler does)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.formatter("json"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_audit_names_who_did_what_and_refusals(api) -> None:
    audit, lines = logging.getLogger("tapedeck.audit"), Lines()
    audit.addHandler(lines)
    try:
        assert api.start().status_code == 201
        refused = api.client.post(f"/video-calls/{api.room}/recording/stop", headers=api.auth("bob", "participant"))
        assert refused.status_code == 403
        assert api.stop().status_code == 202
    finally:
        audit.removeHandler(lines)
    assert [(line["action"], line["outcome"], line["sub"], line["target"]) for line in lines.lines] == [
        ("start", "done", "host", api.room), ("stop", "refused", "bob", api.room), ("stop", "done", "host", api.room)]
    assert all(line["address"] == "127.0.0.1" and line["request_id"] and line["room"] == api.room
               for line in lines.lines)


def test_fields_given_as_extra_reach_the_json_line(stack_env) -> None:
    """Beat's tasks log what they did with `extra={"event": …, "recordingId": …}` (README: the `event` field):
    those fields must be in the JSON line an operator searches, not only on the record. Run against real Redis."""
    import redis as redis_lib

    from workers.maintenance.autostop import stop_over_limits
    from workers.state import RecordingStore

    client = redis_lib.Redis.from_url(stack_env["REDIS_URL"].rsplit("/", 1)[0] + "/14")  # no app or worker uses it
    client.flushdb()
    autostop, lines = logging.getLogger("workers.maintenance.autostop"), Lines()
    autostop.addHandler(lines)
    autostop.setLevel(logging.INFO)
    try:
        _, rid = RecordingStore(client).start("room-idle-log", "rec_idlelog", "webm", {}, now=1_800_000_000.0)
        stopped = stop_over_limits(client, 0, 300, 5, lambda: "task-log", 1_800_000_400.0)
    finally:
        autostop.removeHandler(lines)
        autostop.setLevel(logging.NOTSET)
        client.flushdb()
        client.close()
    assert [s.recording_id for s in stopped] == [rid]
    [line] = [line for line in lines.lines if line.get("event") == "recording_auto_stopped"]
    assert (line["recordingId"], line["room"], line["stopReason"]) == (rid, "room-idle-log", "idle")


def test_extra_fields_never_override_the_line_s_own_keys() -> None:
    record = logging.LogRecord("tapedeck.test", logging.INFO, __file__, 1, "hello", (), None)
    record.__dict__.update({"event": "x", "message": "spoofed", "level": "DEBUG", "unserializable": object()})
    line = json.loads(logs.formatter("json").format(record))
    assert (line["message"], line["level"], line["event"]) == ("hello", "INFO", "x")
    assert isinstance(line["unserializable"], str)


def test_web_writes_only_json_lines_access_included(stack_env, tmp_path) -> None:
    """Found from outside: with LOG_FORMAT=json the Procfile's web wrote the app's lines as JSON but gunicorn's
    start-up and access lines as plain text, so `jq` over the web log broke and an access line could not be found
    by its request id. Every line is JSON now; access lines carry method, path, status and request_id, no token."""
    import os
    import signal

    from app.auth import mint_token
    from tests.conftest import JWT_SECRET
    from tests.live_gunicorn import web_line
    from tests.procfile import http
    from tests.services import wait_until

    token = mint_token(JWT_SECRET, "jsonlog", "alice", "participant", 600)
    with web_line(stack_env, tmp_path, "web", HOME=str(tmp_path), WEB_CONCURRENCY="1", LOG_FORMAT="json",
                  METRICS_DIR=str(tmp_path / "metrics")) as server:
        log_path = server.log_path
        http("GET", f"{server.url}/healthz", headers={"X-Request-Id": "probe-json-1"})
        http("GET", f"{server.url}/video-calls/recordings/rec_nope?token={token}")
        wait_until(lambda: "rec_nope" in log_path.read_text(), 30, what="the access line")
        os.killpg(server.process.pid, signal.SIGTERM)  # what a process manager sends (SIGINT's quick exit makes
        server.process.wait(30)                        # gevent print a plain traceback of the worker's SystemExit)
    text = log_path.read_text()
    assert token not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # raises on any plain line
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    (probe,) = [line for line in lines if line.get("request_id") == "probe-json-1" and line["logger"] == "gunicorn.access"]
    assert (probe["method"], probe["path"], probe["status"]) == ("GET", "/healthz", 200)
    (missing,) = [line for line in lines if line["logger"] == "gunicorn.access" and line.get("path", "").endswith("rec_nope")]
    assert missing["status"] == 404 and missing["query"] == "token=[redacted]" and missing["request_id"]


def test_worker_lines_carry_the_room_of_their_task(stack_env, tmp_path) -> None:
    """Issue 12 asks every worker line for the room as well as the recording and task ids: tasks are sent with
    argsrepr `room=<room> recording=<id>` (what Flower shows), and the worker binds both ids from it."""
    import os

    from tasks import celery_app
    from tests.services import VENV_BIN, CeleryProcess, free_port, wait_until

    queue = f"logs-room-{free_port()}"
    env = {**os.environ, **stack_env, "LOG_FORMAT": "json", "WORKER_METRICS_PORT": "0",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    worker = CeleryProcess(env, tmp_path / "worker.log", "worker", "-Q", queue)
    try:
        worker.wait_ready()
        sent = celery_app.send_task("tapedeck.deliver_webhooks", args=["rec_logroom"], queue=queue,
                                    argsrepr="room=standup-7 recording=rec_logroom").id

        def done() -> list[dict]:
            lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("task_id") == sent and "succeeded" in line["message"]]

        (line,) = wait_until(done, 60, interval=0.2, what="the task's trace line")
    finally:
        worker.stop()
    assert (line["recording_id"], line["room"]) == ("rec_logroom", "standup-7")
    text = worker.log_path.read_text()
    assert "[tasks]" not in text and "-------------- [queues]" not in text  # no ASCII-art banner in a JSON log
    started = [json.loads(x) for x in text.splitlines() if x.startswith("{") and "starting: queues" in x]
    assert started and queue in started[0]["message"]
