"""Pytest plugin: the app over real HTTP for browsers, and a fault proxy in front of it the tests steer.

Register with `pytest_plugins = ["tests.live_server"]` in conftest.py (or `pytest -p tests.live_server`).
The live server answers on http://127.0.0.1:<port>; http://localhost:<port> is the same server seen
from another origin, and the only one CORS_ORIGINS allows, so a page loaded from it makes real
cross-origin calls. The proxy forwards everything unchanged (streaming, so SSE works through it)
except the upload requests it has been told to fail.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.services import free_port

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection", "content-length"})


@dataclass
class LiveServer:
    app: Flask
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def other_origin(self) -> str:
        """The same server under another origin (the one CORS_ORIGINS allows)."""
        return f"http://localhost:{self.port}"


@pytest.fixture(scope="session")
def live_server(stack_env) -> Iterator[LiveServer]:
    """create_app(stack_env) served by werkzeug's threaded server in a daemon thread."""
    from app import create_app

    port = free_port()
    app = create_app({**stack_env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                      "CORS_ORIGINS": f"http://localhost:{port}"})
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield LiveServer(app, port)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def _fault_proxy_server(live_server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(live_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def fault_proxy(_fault_proxy_server) -> FaultProxy:
    """The session's proxy with no faults queued and an empty log."""
    _fault_proxy_server.reset()
    return _fault_proxy_server


@dataclass(frozen=True)
class Fault:
    kind: str
    """"status": answer with `status` (and Retry-After); "drop": close the connection unanswered."""
    status: int = 503
    retry_after: str | None = "1"


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy saw it, with what it answered."""

    at: float
    method: str
    path: str
    status: int | None
    fault: str | None

    @property
    def sequence(self) -> int | None:
        head, _, tail = self.path.split("?")[0].rpartition("/chunks/")
        return int(tail) if head and tail.isdigit() else None


def is_upload(method: str, path: str) -> bool:
    """A chunk upload: the raw PUT route or the base64 JSON route (never a CORS preflight)."""
    path = path.split("?")[0]
    return (method == "PUT" and "/chunks/" in path) or (method == "POST" and path == "/video-calls/chunks/upload")


@dataclass
class FaultProxy:
    """A threaded HTTP proxy on a free loopback port that fails the next N uploads on request."""

    upstream_port: int
    log: list[ProxiedRequest] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        owner = self

        class Handler(_ProxyHandler):
            proxy = owner

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
            self.faults.clear()

    def fail_uploads(self, times: int, status: int = 503, retry_after: str | None = "1") -> None:
        """Answer the next `times` upload requests with `status` (and a Retry-After header)."""
        with self.lock:
            self.faults.extend(Fault("status", status, retry_after) for _ in range(times))

    def drop_uploads(self, times: int) -> None:
        """Close the connection of the next `times` upload requests without answering."""
        with self.lock:
            self.faults.extend(Fault("drop") for _ in range(times))

    @property
    def pending_faults(self) -> int:
        with self.lock:
            return len(self.faults)

    def uploads(self) -> list[ProxiedRequest]:
        with self.lock:
            return [r for r in self.log if is_upload(r.method, r.path)]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            return self.faults.popleft() if self.faults and is_upload(method, path) else None

    def _record(self, method: str, path: str, status: int | None, fault: str | None) -> None:
        with self.lock:
            self.log.append(ProxiedRequest(time.monotonic(), method, path, status, fault))


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.proxy._take_fault(self.command, self.path)
        if fault is not None and fault.kind == "drop":
            self.proxy._record(self.command, self.path, None, "drop")
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all, like a network cut
            return
        if fault is not None:
            self.proxy._record(self.command, self.path, fault.status, "status")
            return self._injected(fault)
        upstream = http.client.HTTPConnection("127.0.0.1", self.proxy.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            self.proxy._record(self.command, self.path, response.status, None)
            self._stream_back(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser went away (e.g. EventSource.close())
        finally:
            upstream.close()

    def _injected(self, fault: Fault) -> None:
        """An error as a load balancer in trouble would send it, with CORS headers so the page can read it."""
        payload = json.dumps({"error": {"code": "unavailable", "message": "injected by the test proxy"}}).encode()
        self.send_response_only(fault.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        if origin := self.headers.get("Origin"):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", "Retry-After")
            self.send_header("Vary", "Origin")
        self.end_headers()
        self.wfile.write(payload)

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
