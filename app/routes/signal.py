"""WS /video-calls/<room>/signal?token=<JWT>: the WebRTC ingest's signalling socket (docs/api.md, WebRTC signalling).

Thin: the handshake is accepted, then the token is checked as the HTTP API checks it (401 → 4401, another room →
4403), the socket takes a lease against RTC_MAX_SOCKETS_PER_TOKEN, and workers/webrtc/signalling.py runs the
conversation. The process's PeerManager (media loop thread, Redis follower) is built on the first socket.
"""
from __future__ import annotations

import threading
from typing import Callable

import redis
from flask import Blueprint, current_app
from flask.blueprints import BlueprintSetupState
from flask_sock import Sock

from app.auth import bearer_token, decode_token, token_expiry
from app.services import services
from workers.errors import TapedeckError, Unauthorized
from workers.ids import check_id
from workers.webrtc import sockets
from workers.webrtc.messages import MAX_MESSAGE_BYTES
from workers.webrtc.peers import PeerManager
from workers.webrtc.signalling import Conversation, refuse

bp = Blueprint("signal", __name__, url_prefix="/video-calls")
sock = Sock()
MANAGER_KEY = "tapedeck.webrtc"
_manager_lock = threading.Lock()


@bp.record_once
def _init(state: BlueprintSetupState) -> None:
    """Frames far above the signalling bound are cut by the WebSocket layer (close 1009) before they are buffered;
    those up to twice the bound get the clear `message_too_large` error."""
    state.app.config.setdefault("SOCK_SERVER_OPTIONS", {"max_message_size": 2 * MAX_MESSAGE_BYTES, "ping_interval": 25})


def _main_caller() -> Callable[[Callable[[str], object], str], None]:
    """Runs a callable in the web process's own context from the media thread (Celery and the API's Redis pool
    belong to the web worker's hub under gevent; touching them from another OS thread is not allowed)."""
    from gevent import get_hub, monkey, spawn

    if monkey.is_module_patched("socket"):
        hub = get_hub()
        return lambda fn, arg: hub.loop.run_callback_threadsafe(spawn, fn, arg)
    return lambda fn, arg: threading.Thread(target=fn, args=(arg,), daemon=True).start()


def manager() -> PeerManager:
    app = current_app
    found = app.extensions.get(MANAGER_KEY)
    if found is None:
        with _manager_lock:
            found = app.extensions.get(MANAGER_KEY)
            if found is None:
                from tasks.lifecycle import finalize_now_if_complete

                client = services().redis
                call = _main_caller()
                found = PeerManager(services().settings,
                                    on_final=lambda rid: call(lambda r: finalize_now_if_complete(client, r), rid))
                app.extensions[MANAGER_KEY] = found
    return found


def _verify(token: str) -> tuple:
    """A refreshed token's claims and expiry (the same checks as every request's)."""
    principal = decode_token(token, services().settings.jwt_secret)
    return principal, token_expiry(token)


@sock.route("/<room>/signal", bp=bp)
def signal(ws, room: str) -> None:
    svc = services()
    lease = None
    try:
        token = bearer_token()
        if not token:
            raise Unauthorized("missing token: open the socket with ?token=<JWT>")
        principal, expires_at = _verify(token)
        check_id(room, "room")
        principal.require_room(room)
        lease = sockets.acquire(svc.redis, token, svc.settings.rtc.max_sockets_per_token)
        Conversation(ws, principal, expires_at, manager(), _verify, heartbeat=lease.refresh).run()
    except TapedeckError as exc:
        refuse(ws, exc.code, exc.message)
    except redis.RedisError:
        refuse(ws, "unavailable", "state store is unavailable; reconnect later")
    finally:
        if lease is not None:
            lease.release()
