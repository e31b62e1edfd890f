"""gunicorn settings for the Procfile's `web` line: an access log that never shows a token, in LOG_FORMAT.

The worker class and counts stay on the Procfile line where operators see them. This file imports nothing
from the app: it is loaded in gunicorn's master, before the gevent worker patches the standard library, and
the app must be imported only after that patching (never set preload_app here; if it ever is, import aiortc
at module level first — see README "Serving").
"""
from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

REDACTED = "[redacted]"
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""Any JWT (base64url of '{"'), wherever it appears: a second net under the query-parameter rule."""
SECRET_HEADERS = ("{authorization}i", "{cookie}i", "{proxy-authorization}i")


def redact_query(query: str) -> str:
    """Replaces the value of every parameter whose (decoded) name mentions a token; keeps the rest readable."""
    parts = re.split(r"([&;])", query)
    for index, part in enumerate(parts):
        name, sep, _value = part.partition("=")
        if sep and "token" in unquote_plus(name).lower():
            parts[index] = f"{name}={REDACTED}"
    return "".join(parts)


def redact(text: str) -> str:
    """A request line, URI or query string with every token removed."""
    path, sep, query = text.partition("?")
    return JWT_SHAPE.sub(REDACTED, path + sep + redact_query(query) if sep else text)


def redact_uri_in_line(line: str) -> str:
    """'GET /x?token=… HTTP/1.1' → 'GET /x?token=[redacted] HTTP/1.1' (the URI is the middle word)."""
    method, _, rest = line.partition(" ")
    uri, _, protocol = rest.rpartition(" ")
    return f"{method} {redact(uri)} {protocol}" if uri else redact(line)


def json_logs(environ: dict[str, str] = os.environ) -> bool:  # type: ignore[assignment]
    """LOG_FORMAT as workers/settings.py reads it: json, text, or unset (json unless TAPEDECK_ENV=development)."""
    chosen = environ.get("LOG_FORMAT", "").strip().lower()
    return chosen == "json" or (not chosen and environ.get("TAPEDECK_ENV", "").strip().lower() != "development")


class JsonLineFormatter(logging.Formatter):
    """gunicorn's own lines (start-up, worker boots, access) in the app's JSON shape: ts, level, logger, message,
    then the access fields (method, path, status, request_id …), so one search covers every web line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in getattr(record, "fields", {}).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def access_fields(atoms: dict, request_time) -> dict:  # type: ignore[no-untyped-def]
    """The searchable parts of one (already redacted) access line; '-' (absent) is left out."""
    status = atoms.get("s")
    fields = {"remote_addr": atoms.get("h"), "method": atoms.get("m"), "path": atoms.get("U"),
              "query": atoms.get("q"), "status": int(status) if str(status).isdigit() else status,
              "bytes": atoms.get("B"), "duration_ms": round(request_time.total_seconds() * 1000.0, 3),
              "referer": atoms.get("f"), "user_agent": atoms.get("a"), "request_id": atoms.get("{x-request-id}o")}
    return {k: v for k, v in fields.items() if v not in (None, "", "-")}


class RedactingLogger(Logger):
    """gunicorn's logger whose access-log atoms (request line, query, referer, headers) carry no token, and whose
    lines are JSON when LOG_FORMAT is (production's default), like the app's."""

    def setup(self, cfg):  # type: ignore[no-untyped-def]
        super().setup(cfg)
        if json_logs():
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonLineFormatter())

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        try:
            self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms),
                                 extra={"fields": access_fields(atoms, request_time)})
        except Exception:  # noqa: BLE001 - as gunicorn's own access(): a log line never fails a request
            self.error("access log line failed", exc_info=True)

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["r"] = redact_uri_in_line(atoms["r"])
        for name in ("q", "f", "{raw_uri}e", "{query_string}e", "{http_referer}e", "{request_uri}e"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        for name in SECRET_HEADERS + ("{http_authorization}e", "{http_cookie}e"):
            if atoms.get(name):
                atoms[name] = REDACTED
        for name, value in atoms.items():
            if isinstance(value, str) and "eyJ" in value:
                atoms[name] = JWT_SHAPE.sub(REDACTED, value)
        return atoms


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """The app is loaded by now: freeze its objects out of the garbage collector's sight (full collections
    walked every module, class and compiled template on the chunk path). Then, under gevent, which makes
    sockets cooperative but not disk flushes: run fsync in gevent's thread pool, so one chunk's flush to disk
    no longer stalls every other request and stream of the worker while it waits; and a chunk's whole disk work
    (creating, writing and renaming its file wait on the filesystem journal too) in the same pool, closing the file
    with the unpatched os.close (gevent's checks the descriptor first, for watchers a regular file never has)."""
    import gc

    gc.collect()
    gc.freeze()
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return  # not the gevent worker: threads already overlap their fsyncs
    import os

    from gevent import get_hub

    blocking_fsync = monkey.get_original("os", "fsync")
    thread_id = monkey.get_original("_thread", "get_ident")
    loop_thread, hub = thread_id(), get_hub()

    def cooperative_fsync(fd: int) -> None:
        if thread_id() != loop_thread:  # already in a pool thread (a chunk's disk work): flush right here; asking
            return blocking_fsync(fd)  # get_hub() there would build that thread its own hub and pool of threads
        hub.threadpool.apply(blocking_fsync, (fd,))

    os.fsync = cooperative_fsync

    from workers import chunks
    from workers.staging import local

    local.close_file = monkey.get_original("os", "close")  # a staged chunk is a regular file: no watcher to settle

    def run_disk_work(work, *args):  # type: ignore[no-untyped-def]
        """A whole chunk's disk work, off the loop; a caller already on a thread of its own (WebRTC's io thread) runs it."""
        return hub.threadpool.apply(work, args) if thread_id() == loop_thread else work(*args)

    chunks.run_disk_work = run_disk_work


ERROR_CODES = {400: "invalid_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
               431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}
"""The API's error codes for what gunicorn refuses itself, before the app sees the request."""


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:  # type: ignore[no-untyped-def]
    """gunicorn's own refusals (a malformed request line, oversized headers, a bad header name) in the API's JSON
    error shape instead of its HTML page, so a client that parses every error body meets JSON. The message is
    gunicorn's, with tokens redacted and cut short (a refused request line may carry ?token=); a 500 says nothing
    of internals."""
    from gunicorn import util

    message = "internal server error" if status_int >= 500 and status_int != 501 else redact(mesg)[:200] or reason
    body = json.dumps({"error": {"code": ERROR_CODES.get(status_int, "invalid_request"), "message": message}})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, (head + body).encode("latin-1", "replace"))


def _metrics_dir() -> Path:
    """One folder per exporter: $METRICS_DIR/web-<PORT> (default ./var/metrics), apart from the worker's."""
    base = os.environ.get("METRICS_DIR", "").strip() or "./var/metrics"
    return Path(base, f"web-{os.environ.get('PORT', '').strip() or '8000'}").resolve()


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """In the master, before any fork: gunicorn's own error pages become JSON; every worker's prometheus-client
    then writes its own files in one folder, and /metrics sums them. Emptied first: a previous run's files would be summed into this run's counters."""
    from gunicorn import util

    util.write_error = write_json_error  # workers fork from here, and look write_error up at each refusal
    path = _metrics_dir()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def worker_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """A worker leaving (restart, deploy, shutdown): its WebRTC peers store what they recorded before it goes (not
    marked final: the recording goes on with the participant's next peer, or ends with the room's stop). The wait is
    a real sleep: gevent's hub, which may be handing this greenlet the worker's exit, is not needed by the media and
    io threads doing the work."""
    import time

    app = getattr(worker, "wsgi", None)
    manager = getattr(app, "extensions", {}).get("tapedeck.webrtc") if app is not None else None
    if manager is None:
        return
    from gevent import monkey

    sleep = monkey.get_original("time", "sleep") if monkey.is_module_patched("time") else time.sleep
    done = manager.begin_shutdown()
    deadline = time.monotonic() + 10
    while not done.done() and time.monotonic() < deadline:
        sleep(0.05)
    if not done.done() or done.exception() is not None:
        server.log.warning("webrtc peers not all flushed at worker exit: %s", done.exception() if done.done() else "timeout")


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """A worker that exited: its live gauges leave the sums (its counters stay, as Prometheus expects)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


logger_class = RedactingLogger
accesslog = "-"
