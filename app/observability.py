"""Request ids: a caller's X-Request-Id is kept when it is short and plain, else one is made; it is echoed on
the response and bound, with the recording, room and participant of the URL, to every log line of the request."""
from __future__ import annotations

import logging
import re
import secrets

from flask import Flask, Response, g, request

from app.control import client_address
from app.services import services
from workers import logs

HEADER = "X-Request-Id"
VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""Bounded length and charset: nothing a log search or a terminal could misread."""
URL_IDS = {"recording_id": "recording_id", "room": "room", "participant_id": "participant_id"}


def request_id_for(supplied: str) -> str:
    """The caller's X-Request-Id when it is short and plain, else a new one."""
    return supplied if VALID.match(supplied) else secrets.token_hex(8)


def bind_ids(request_id: str, view_args: dict) -> None:
    logs.bind(request_id=request_id, **{field: view_args.get(arg) for field, arg in URL_IDS.items()})


def _bind() -> None:
    req = request._get_current_object()  # type: ignore[attr-defined] - one context lookup, not one per attribute
    g.request_id = request_id = request_id_for(req.headers.get(HEADER, ""))
    bind_ids(request_id, req.view_args or {})


def _echo(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id", "")
    return response


AUDITED = {"recordings.start": "start", "recordings.stop": "stop", "lifecycle.pause": "pause",
           "lifecycle.resume": "resume", "lifecycle.delete": "delete", "files.download": "download"}
audit = logging.getLogger("tapedeck.audit")


def _audit(response: Response) -> Response:
    """Who started, stopped, paused, resumed, deleted or downloaded what, from where; refused calls too."""
    action = AUDITED.get(request.endpoint or "")
    if action is None or (action == "download" and response.status_code == 206):
        return response  # a player's range requests of one download are not each a new download
    principal = g.get("principal")
    settings = services().settings
    address = client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"), settings.trusted_proxies)
    args = request.view_args or {}
    fields = {"action": action, "outcome": "done" if response.status_code < 400 else "refused",
              "status": response.status_code, "sub": principal.sub if principal else None,
              "address": str(address) if address is not None else None,
              "target": args.get("room") or args.get("recording_id") or args.get("key")}
    audit.info("%s %s by %s from %s", action, fields["outcome"], fields["sub"], fields["address"],
               extra={"fields": fields})
    return response


def _unbind(_exc: BaseException | None) -> None:
    logs.clear()


def init_app(app: Flask) -> None:
    """First hook of every request: later hooks and views already log with the ids."""
    app.before_request_funcs.setdefault(None, []).insert(0, _bind)
    app.after_request(_echo)
    app.after_request(_audit)
    app.teardown_request(_unbind)
