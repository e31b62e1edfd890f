"""Bearer tokens: HS256 JWTs with sub, room, role and exp, from the header or ?token= (EventSource, WebSocket)."""
from __future__ import annotations

import time

import jwt
from flask import request

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


def decode_token(token: str, secret: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "room", "role"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token is invalid") from None
    sub, room, role = claims.get("sub"), claims.get("room"), claims.get("role")
    if not all(isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in (sub, room)) or role not in ROLES:
        raise Unauthorized("token claims are malformed")
    return Principal(sub=sub, room=room, role=role)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return request.args.get("token") or None


def authenticate() -> Principal:
    """The caller's verified claims; the first check of every protected route (401)."""
    token = bearer_token()
    if not token:
        raise Unauthorized("missing bearer token")
    return decode_token(token, services().settings.jwt_secret)
