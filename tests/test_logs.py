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
