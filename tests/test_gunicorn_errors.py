"""Requests gunicorn refuses before the app sees them still answer the API's JSON error shape (docs/api.md),
through the Procfile's real `web` line: a client parsing every error body as JSON must not meet HTML."""
from __future__ import annotations

import json
import socket

import pytest


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (http.client refuses to send what these tests need) and read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 9000 + b"\r\n\r\n",
     431, "headers_too_large"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"NOT A REQUEST LINE\r\n\r\n", 400, "invalid_request"),
    (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "invalid_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", 400, "invalid_request"),
], ids=["oversized-header", "long-uri", "garbage-line", "bad-version", "bad-header-name"])
def test_requests_gunicorn_refuses_answer_the_json_error_shape(live_gunicorn, request_bytes: bytes, status: int,
                                                              code: str) -> None:
    got, headers, body = raw_exchange(live_gunicorn.port, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "aaaa" not in error["message"]  # a refused header's value (a token, maybe) is never echoed


def test_the_app_still_answers_after_a_refused_request(live_gunicorn) -> None:
    raw_exchange(live_gunicorn.port, b"NOT A REQUEST LINE\r\n\r\n")
    assert live_gunicorn.request("GET", "/healthz").status == 200
