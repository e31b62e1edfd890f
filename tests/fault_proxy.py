"""A reverse HTTP proxy that logs every request and fails chosen ones, since moto or the app cannot fail on cue.

Point a client (boto3, the GCS client, a browser page) at proxy.url; requests go on to the upstream
server unchanged (the Host header too, so URLs the server builds still point at the proxy) and
responses come back as they arrive, so server-sent events stream through. A rule answers the
requests it matches with an error status (optionally with Retry-After) or drops the connection
without an answer, a given number of times; rules are used in the order they were added.
Injected answers carry CORS headers when the request has an Origin, so a page can read them.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Literal
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection", "expect", "content-length"})
FaultMode = Literal["status", "drop"]
""""status": answer with the rule's status and body; "drop": close the connection unanswered."""
JSON_ERROR = json.dumps({"error": {"code": "unavailable", "message": "injected by the test proxy"}}).encode()
S3_ERROR = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"


@dataclass
class LoggedRequest:
    """One request as the proxy saw it, with what it answered."""

    at: float
    """time.monotonic() when the request arrived."""
    method: str
    path: str
    """Without the query string."""
    query: dict[str, str]
    headers: dict[str, str]
    """Names in lower case."""
    body_size: int
    fault: FaultMode | None
    status: int | None = None
    """The status sent back (None for a drop, or while upstream has not answered yet)."""

    @property
    def sequence(self) -> int | None:
        """The chunk number of the app's /chunks/<n> upload route, if this is one."""
        head, _, tail = self.path.rpartition("/chunks/")
        return int(tail) if head and tail.isdigit() else None


@dataclass
class FaultRule:
    matches: Callable[[LoggedRequest], bool]
    times: int
    mode: FaultMode = "status"
    status: int = 500
    retry_after: str | None = None
    content_type: str = "application/json"
    body: bytes = JSON_ERROR


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
        """Forget the log and every rule."""
        with self.lock:
            self.log.clear()
            self.rules.clear()

    def fail_when(self, matches: Callable[[LoggedRequest], bool], *, times: int = 1, mode: FaultMode = "status",
                  status: int = 500, retry_after: str | None = None, content_type: str = "application/json",
                  body: bytes = JSON_ERROR) -> None:
        """Fail the next `times` requests that `matches`: answer `status` with `body`, or drop them."""
        with self.lock:
            self.rules.append(FaultRule(matches, times, mode, status, retry_after, content_type, body))

    @property
    def pending_faults(self) -> int:
        """How many failures the rules still have to inject."""
        with self.lock:
            return sum(rule.times for rule in self.rules)

    def requests(self, matches: Callable[[LoggedRequest], bool]) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.log if matches(r)]

    # S3 multipart uploads (moto behind the proxy)

    @staticmethod
    def _is_part(number: int) -> Callable[[LoggedRequest], bool]:
        return lambda r: r.method == "PUT" and r.query.get("partNumber") == str(number)

    def fail_part(self, number: int, *, times: int = 1, mode: FaultMode = "status") -> None:
        """Fail the S3 UploadPart request for part `number` with an S3-shaped 500 (or a drop)."""
        self.fail_when(self._is_part(number), times=times, mode=mode, content_type="application/xml", body=S3_ERROR)

    def part_uploads(self, number: int) -> list[LoggedRequest]:
        return self.requests(self._is_part(number))

    def _admit(self, request: LoggedRequest) -> FaultRule | None:
        """Log the request and take the first rule with failures left that matches it."""
        with self.lock:
            rule = next((r for r in self.rules if r.times > 0 and r.matches(request)), None)
            if rule is not None:
                rule.times -= 1
                request.fault = rule.mode
                request.status = rule.status if rule.mode == "status" else None
            self.log.append(request)
            return rule

    def _answered(self, request: LoggedRequest, status: int) -> None:
        with self.lock:
            request.status = status


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

    def _relay(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        request = LoggedRequest(time.monotonic(), self.command, split.path, query,
                                {k.lower(): v for k, v in self.headers.items()}, len(body), None)
        rule = self.owner._admit(request)
        if rule is not None and rule.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all, like a dead peer or a network cut
            return
        if rule is not None:
            return self._injected(rule)
        upstream = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            self.owner._answered(request, response.status)
            self._stream_back(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. EventSource.close())
        finally:
            upstream.close()

    def _injected(self, rule: FaultRule) -> None:
        """An error as a server or load balancer in trouble would send it, readable cross-origin."""
        self.send_response_only(rule.status)
        self.send_header("Content-Type", rule.content_type)
        if rule.retry_after is not None:
            self.send_header("Retry-After", rule.retry_after)
        if origin := self.headers.get("Origin"):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", "Retry-After")
            self.send_header("Vary", "Origin")
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(rule.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(rule.body)

    def _stream_back(self, response: http.client.HTTPResponse) -> None:
        """Relay status, headers and body as it arrives: fixed length as is, anything else re-chunked."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        if length is not None or bodiless:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if not bodiless:
                self.wfile.write(response.read())
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while piece := response.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _relay
