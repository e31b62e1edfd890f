"""Pytest plugin: the app over real HTTP for browsers, and a fault proxy in front of it the tests steer.

Register with `pytest_plugins = ["tests.live_server"]` in conftest.py (or `pytest -p tests.live_server`).
The live server answers on http://127.0.0.1:<port>; http://localhost:<port> is the same server seen
from another origin, and the only one CORS_ORIGINS allows, so a page loaded from it makes real
cross-origin calls. The fault proxy (tests/fault_proxy.py) forwards everything unchanged (streaming,
so SSE works through it) except the upload requests it has been told to fail.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.fault_proxy import FaultProxy, LoggedRequest
from tests.services import free_port


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
def _fault_proxy_server(live_server) -> Iterator[UploadFaultProxy]:
    proxy = UploadFaultProxy(live_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def fault_proxy(_fault_proxy_server) -> UploadFaultProxy:
    """The session's proxy with no faults queued and an empty log."""
    _fault_proxy_server.reset()
    return _fault_proxy_server


def is_upload(request: LoggedRequest) -> bool:
    """A chunk upload: the raw PUT route or the base64 JSON route (never a CORS preflight)."""
    return ((request.method == "PUT" and "/chunks/" in request.path)
            or (request.method == "POST" and request.path == "/video-calls/chunks/upload"))


class UploadFaultProxy(FaultProxy):
    """The fault proxy with shorthands for failing the app's chunk uploads, in the order they are asked for."""

    def fail_uploads(self, times: int, status: int = 503, retry_after: str | None = "1") -> None:
        """Answer the next `times` upload requests with `status` (and a Retry-After header)."""
        self.fail_when(is_upload, times=times, status=status, retry_after=retry_after)

    def drop_uploads(self, times: int) -> None:
        """Close the connection of the next `times` upload requests without answering."""
        self.fail_when(is_upload, times=times, mode="drop")

    def uploads(self) -> list[LoggedRequest]:
        return self.requests(is_upload)
