"""Bearer tokens: HS256 JWTs with sub, room, role and exp, from the header or ?token= (EventSource, WebSocket)."""
from __future__ import annotations

import time
from functools import lru_cache

import jwt
from flask import g, request

from app.services import services
from workers.access import ROLES, Principal
from workers.errors import Unauthorized
from workers.ids import ID_PATTERN

ALGORITHM = "HS256"
"""The only algorithm accepted: no 'none', no RS/HS confusion."""
DEFAULT_TTL_SECONDS = 3600


def mint_token(secret: str, room: str, sub: str, role: str, ttl: int = DEFAULT_TTL_SECONDS) -> str:
    now = int(time.time())
    claims = {"sub": sub, "room": room, "role": role, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


VERIFIED_TOKENS = 4096
"""Tokens whose signature and claims one process remembers: a participant sends one per second with the same
token, and HMAC + claim checks were a tenth of a chunk upload's CPU. Keyed by the whole token and secret, so a
changed byte or a rotated secret is verified afresh; expiry is compared on every use; failures are never kept."""


def decode_token(token: str, secret: str) -> Principal:
    principal, expires = _verified(token, secret)
    if expires <= time.time():
        raise Unauthorized("token has expired")
    return principal


@lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(token: str, secret: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "room", "role"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token is invalid") from None
    sub, room, role = claims.get("sub"), claims.get("room"), claims.get("role")
    if not all(isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in (sub, room)) or role not in ROLES:
        raise Unauthorized("token claims are malformed")
    if not isinstance(claims["exp"], (int, float)):
        raise Unauthorized("token claims are malformed")
    return Principal(sub=sub, room=room, role=role), float(claims["exp"])


QUERY_TOKEN_METHODS = frozenset({"GET", "HEAD"})
"""Where ?token= is accepted: EventSource and the WebSocket handshake are GETs; any other method sends the header."""


def bearer_token() -> str | None:
    """The request's token: the Authorization header, or ?token= on GET routes only (docs/api.md, Tokens)."""
    header = request.headers.get("Authorization", "")
    if header:
        return token_from_authorization(header)
    if request.method not in QUERY_TOKEN_METHODS:
        return None
    return request.args.get("token") or None


def token_from_authorization(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other scheme or an empty value."""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


MISSING_TOKEN = "missing bearer token: send Authorization: Bearer <token> (?token= only on GET)"


def token_expiry(token: str) -> float:
    """The exp claim of a token authenticate() has already verified, so long-lived responses can end on time."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])


def authenticate() -> Principal:
    """The caller's verified claims; the first check of every protected route (401)."""
    request_globals = g._get_current_object()  # type: ignore[attr-defined] - one context lookup for get and set
    known = request_globals.get("principal")
    if known is not None:  # already verified for this request (the rate limit needs it before the view)
        return known
    token = bearer_token()
    if not token:
        raise Unauthorized(MISSING_TOKEN)
    request_globals.principal = principal = decode_token(token, services().settings.jwt_secret)
    return principal
