"""The raw chunk PUT answered outside Flask's request machinery: the one request every participant sends every
second, and the one whose cost sets how many participants a web process takes.

Measured (bench/README, "The chunk lane"): through Flask, the request context, routing, the Request and Response
objects and six hooks cost more CPU per chunk than tapedeck's own work (the token, the rate windows, the SHA-256,
staging, the accept script), and intake reached ~0.75 of the load bench's floor — a bare Flask route that only
writes and fsyncs the body and sets one Redis hash field. The lane does the same work as the Flask view, through the
same functions (`take_raw`, `after_accept`, the limiter's `around`, `decode_token`), with none of that machinery.

The Flask view stays the reference, and the lane hands Flask everything it does not answer in full itself:
- any other method or path, a path that is not ASCII (werkzeug decodes it before routing), a body without a
  Content-Length (chunked) and, when CORS_ORIGINS is set, every request (flask-cors adds its headers to answers,
  with or without an Origin);
- every error: it is raised to Flask's own error handlers and after-request hooks, in a request context of the same
  request (its body already read), so an error's status, body and headers are the view's (tests/test_chunk_lane.py
  compares the two on every error the route answers).
What the lane writes itself is only the 202: its body, Content-Type, Content-Length and X-Request-Id.
"""
from __future__ import annotations

import re
import time
from typing import Callable, Iterable

from flask import Flask, g, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.wsgi import get_content_length, get_input_stream

from app import limits
from app.auth import MISSING_TOKEN, decode_token, token_from_authorization
from app.metrics import count_accepted
from app.observability import HEADER as REQUEST_ID_HEADER, bind_ids, request_id_for
from app.routes.chunks import after_accept, take_raw
from app.services import EXTENSION_KEY
from workers import logs
from workers.chunk_index import RateCheck
from workers.chunks import ChunkReceipt
from workers.errors import Unauthorized

RAW_CHUNK_PATH = re.compile(r"/video-calls/recordings/([^/]+)/participants/([^/]+)/([^/]+)/chunks/([^/]+)")
"""app/routes/chunks.py's RAW_PATH under the blueprint's prefix, as werkzeug matches it (each part `[^/]+`)."""

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


class ChunkLane:
    """WSGI middleware in front of Flask's wsgi_app (installed by create_app)."""

    def __init__(self, app: Flask, flask_wsgi: WsgiApp) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        match = RAW_CHUNK_PATH.fullmatch(path) if environ.get("REQUEST_METHOD") == "PUT" else None
        length = get_content_length(environ) if match is not None else None
        cors = self.app.extensions[EXTENSION_KEY].settings.cors_origins
        if match is None or length is None or not path.isascii() or cors:
            return self.flask_wsgi(environ, start_response)  # what the lane leaves to Flask (the module's docstring)
        started = time.perf_counter()
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        recording_id, participant_id, stream_type, sequence = ids = match.groups()
        bind_ids(request_id, {"recording_id": recording_id, "participant_id": participant_id})
        try:
            body = self._accept(environ, ids, length, started)
        except Exception as error:  # noqa: BLE001 - every error is answered by Flask's handlers, as the view's are
            return self._answer_error(environ, start_response, error, request_id)
        finally:
            logs.clear()
        start_response("202 ACCEPTED", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                        (REQUEST_ID_HEADER, request_id)])
        return [body]

    def _accept(self, environ: dict, ids: tuple[str, str, str, str], length: int, started: float) -> bytes:
        """The view's work in its order: token (401), rate (429), then take_raw's checks and intake."""
        extensions = self.app.extensions
        svc, limiter = extensions[EXTENSION_KEY], extensions[limits.EXTENSION_KEY]
        token = token_from_authorization(environ.get("HTTP_AUTHORIZATION", ""))
        if not token:
            raise Unauthorized(MISSING_TOKEN)
        principal = decode_token(token, svc.settings.jwt_secret)
        max_length = self.app.config["MAX_CONTENT_LENGTH"]

        def take(rate: RateCheck) -> ChunkReceipt:
            return take_raw(svc, principal, rate, ids, EnvironHeaders(environ), length,
                            lambda: get_input_stream(environ, max_content_length=max_length).read())

        receipt = limiter.around((principal.room, principal.sub, limits.CHUNKS), take)
        return after_accept(count_accepted(receipt, started), svc)

    def _answer_error(self, environ: dict, start_response: Callable, error: Exception,
                      request_id: str) -> Iterable[bytes]:
        """The error as the view's: Flask's error handlers and after-request hooks in a context of this request."""
        app = self.app
        with app.request_context(environ):
            g.request_id = request_id
            bind_ids(request_id, request.view_args or {})
            try:
                response = app.make_response(app.handle_user_exception(error))
            except Exception as unhandled:  # noqa: BLE001 - as Flask's own dispatch: the last resort handler
                response = app.handle_exception(unhandled)
            response = app.process_response(response)
            return response(environ, start_response)
