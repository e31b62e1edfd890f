"""One signalling socket's conversation (docs/api.md, WebRTC signalling), apart from Flask: the route authenticates and hands over.

offer → answer (once), candidate*, token refreshes, bye. Every refusal is an `error` message with a stable code,
then a close with a 44xx code mirroring the HTTP status (4401 like 401 …); never a traceback. The socket is
bounded: message size (messages.py), messages per window, an offer within OFFER_TIMEOUT_SECONDS, and the token's
life (a refresh extends it; unrefreshed, `token_expired` closes the socket and the participant's recording
ends cleanly at that point).
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Callable, Protocol

import redis
from simple_websocket import ConnectionClosed

from workers.access import Principal
from workers.errors import Forbidden, RateLimited, TapedeckError, Unauthorized, Unavailable
from workers.webrtc.messages import BadMessage, Bye, Candidate, Offer, TokenRefresh, parse_message
from workers.webrtc.peers import PeerManager, PeerSession, SignalError

log = logging.getLogger(__name__)

MAX_MESSAGES = 100
RATE_WINDOW_SECONDS = 10.0
"""At most MAX_MESSAGES per RATE_WINDOW_SECONDS: an offer plus a few dozen trickled candidates fit many times."""
OFFER_TIMEOUT_SECONDS = 60.0
"""A socket that sends no offer within this is closed (it would hold a lease and a greenlet for nothing)."""
RECEIVE_SLICE_SECONDS = 1.0
ANSWER_TIMEOUT_SECONDS = 20.0

CLOSE_CODES = {
    "unauthorized": 4401, "token_expired": 4401, "forbidden": 4403, "not_found": 4404,
    "already_offered": 4409, "participant_limit": 4409, "rate_limited": 4429, "busy": 4429, "unavailable": 4503, "internal_error": 1011,
}
"""Any other code (bad_json, bad_message, unknown_type, message_too_large, no_media, invalid_request) is 4400."""


class Socket(Protocol):
    def send(self, data: str) -> None: ...
    def receive(self, timeout: float | None = None) -> str | bytes | None: ...
    def close(self, reason: int | None = None, message: str | None = None) -> None: ...


def close_code(code: str) -> int:
    return CLOSE_CODES.get(code, 4400)


CLOSE_WAIT_SECONDS = 2.0
"""How long a close waits for the client's closing frame before the server drops the connection."""


def close_cleanly(ws: Socket, code: int, reason: str) -> None:
    """Close, then wait until the socket's reader has taken the client's answering close frame: a TCP connection
    closed with unread bytes sends RST, and a client may then lose the error message still in its buffers."""
    try:
        ws.close(code, reason[:120])
    except Exception:  # noqa: BLE001 - already closed by the client
        return
    reader = getattr(ws, "thread", None)
    if reader is not None:
        reader.join(CLOSE_WAIT_SECONDS)


def refuse(ws: Socket, code: str, message: str) -> None:
    """The one way a socket ends in error: the message, then the close code."""
    try:
        ws.send(json.dumps({"type": "error", "code": code, "message": message}))
    except Exception:  # noqa: BLE001 - the client may be gone already
        return
    close_cleanly(ws, close_code(code), message)


class Conversation:
    def __init__(self, ws: Socket, principal: Principal, expires_at: float, manager: PeerManager,
                 verify: Callable[[str], tuple[Principal, float]], heartbeat: Callable[[], None] = lambda: None,
                 now: Callable[[], float] = time.time) -> None:
        self.ws, self.principal, self.expires_at = ws, principal, expires_at
        self.manager, self.verify, self.heartbeat, self.now = manager, verify, heartbeat, now
        self.session: PeerSession | None = None
        self.recent: deque[float] = deque()
        self.opened = now()

    def run(self) -> None:
        """Until bye, a refusal or the client going away; always frees the peer."""
        try:
            self._loop()
        except SignalError as exc:
            refuse(self.ws, exc.code, exc.message)
        except BadMessage as exc:
            refuse(self.ws, exc.code, exc.message)
        except TapedeckError as exc:
            refuse(self.ws, exc.code, exc.message)
        except ConnectionClosed:
            raise  # the client went away: flask-sock ends the socket
        except redis.RedisError:
            log.warning("webrtc signalling: Redis unavailable")
            refuse(self.ws, "unavailable", "state store is unavailable; reconnect later")
        except Exception:  # noqa: BLE001 - a bug of ours: logged with its traceback, the client told plainly
            log.exception("webrtc signalling failed")
            refuse(self.ws, "internal_error", "internal error")
        finally:
            self._end()

    def _loop(self) -> None:
        while True:
            now = self.now()
            if now >= self.expires_at:
                raise SignalError("token_expired", "the token has expired; reconnect with a fresh one")
            if self.session is None and now - self.opened > OFFER_TIMEOUT_SECONDS:
                raise SignalError("bad_message", f"no offer within {OFFER_TIMEOUT_SECONDS:.0f} s")
            raw = self.ws.receive(timeout=max(0.05, min(RECEIVE_SLICE_SECONDS, self.expires_at - now)))
            self.heartbeat()
            if self.session is not None and self.session.refusal is not None:
                raise self.session.refusal  # the recording refused this participant (e.g. participant_limit)
            if raw is None:
                continue
            self._count()
            message = parse_message(raw)
            if isinstance(message, Bye):
                self._end()
                close_cleanly(self.ws, 1000, "bye")
                return
            self._handle(message)

    def _count(self) -> None:
        now = self.now()
        self.recent.append(now)
        while self.recent and self.recent[0] <= now - RATE_WINDOW_SECONDS:
            self.recent.popleft()
        if len(self.recent) > MAX_MESSAGES:
            raise RateLimited(f"at most {MAX_MESSAGES} messages per {RATE_WINDOW_SECONDS:.0f} s")

    def _handle(self, message: Offer | Candidate | TokenRefresh) -> None:
        if isinstance(message, TokenRefresh):
            self._refresh(message.token)
        elif isinstance(message, Offer):
            self._offer(message.sdp)
        elif isinstance(message, Candidate):
            if self.session is None:
                raise SignalError("bad_message", "send the offer before candidates")
            self.manager.rtc.call(self.session.add_candidate(message.candidate, message.sdpMid, message.sdpMLineIndex),
                                  ANSWER_TIMEOUT_SECONDS)

    def _refresh(self, token: str) -> None:
        try:
            principal, expires_at = self.verify(token)
        except Unauthorized as exc:
            raise SignalError("unauthorized", exc.message) from None
        if principal.room != self.principal.room or principal.sub != self.principal.sub:
            raise Forbidden("a refreshed token must be for the same room and subject")
        self.expires_at = expires_at
        self.ws.send(json.dumps({"type": "token", "expiresAt": expires_at}))

    def _offer(self, sdp: str) -> None:
        from workers.webrtc.peers import has_media

        if self.session is not None:
            raise SignalError("already_offered", "this socket already has a peer; open another socket to renegotiate")
        if not has_media(sdp):
            raise SignalError("no_media", "the offer has no audio or video to record")
        self.session = self.manager.open(self.principal)
        try:
            answer = self.manager.rtc.call(self.session.answer(sdp), ANSWER_TIMEOUT_SECONDS)
        except SignalError:
            raise
        except TimeoutError:
            raise Unavailable("the server could not answer in time; retry") from None
        except Exception as exc:  # noqa: BLE001 - aiortc's parse/negotiation errors are the offer's fault
            log.info("webrtc offer refused: %s", exc)
            raise SignalError("bad_message", f"the offer could not be negotiated: {type(exc).__name__}") from None
        self.ws.send(json.dumps({"type": "answer", "sdp": answer}))

    def _end(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                self.manager.close(session, final=False)
            except Exception:  # noqa: BLE001 - freeing must go on; logged for the operator
                log.exception("webrtc peer close failed")
