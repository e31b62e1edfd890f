"""A reverse HTTP proxy that logs every request and fails chosen ones, since moto cannot fail on cue.

Point a client's endpoint at proxy.url; requests go on to the upstream server unchanged (the
Host header too, so URLs the server builds still point at the proxy). A rule answers matching
requests with a 500 or drops the connection without an answer, a given number of times.
"""
from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Literal
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection", "expect", "content-length"})
FaultMode = Literal["500", "drop"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the proxy saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Names in lower case."""
    body_size: int
    failed: bool


@dataclass
class FaultRule:
    matches: Callable[[LoggedRequest], bool]
    times: int
    mode: FaultMode


@dataclass
class FaultProxy:
    """Forward to upstream_port on 127.0.0.1 from a free loopback port, in a thread."""

    upstream_port: int
    log: list[LoggedRequest] = field(default_factory=list)
    rules: list[FaultRule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.rules.clear()

    def fail_when(self, matches: Callable[[LoggedRequest], bool], *, times: int = 1,
                  mode: FaultMode = "500") -> None:
        with self.lock:
            self.rules.append(FaultRule(matches, times, mode))

    def fail_part(self, number: int, *, times: int = 1, mode: FaultMode = "500") -> None:
        """Fail the S3 UploadPart request for part `number`."""
        self.fail_when(lambda r: r.method == "PUT" and r.query.get("partNumber") == str(number),
                       times=times, mode=mode)

    def part_uploads(self, number: int) -> list[LoggedRequest]:
        return [r for r in self.log if r.method == "PUT" and r.query.get("partNumber") == str(number)]

    def _fault_for(self, request: LoggedRequest) -> FaultMode | None:
        with self.lock:
            for rule in self.rules:
                if rule.times > 0 and rule.matches(request):
                    rule.times -= 1
                    return rule.mode
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        probe = LoggedRequest(self.command, split.path, query, headers, len(body), False)
        fault = self.owner._fault_for(probe)
        with self.owner.lock:
            self.owner.log.append(LoggedRequest(**{**probe.__dict__, "failed": fault is not None}))
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all, like a dead peer
            return
        if fault == "500":
            payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            return self._answer(500, [("Content-Type", "application/xml")], payload)
        upstream = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            if self.command == "HEAD" and response.getheader("Content-Length"):
                kept.append(("Content-Length", response.getheader("Content-Length")))
            self._answer(response.status, kept, payload)
        finally:
            upstream.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward
