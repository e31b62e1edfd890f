"""The Tapedeck-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">."""
from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Header value a receiver recomputes to trust the body and reject replays by t."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (used by the tests and shown in the README)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
        return False
    expected = sign(secret, body, int(parts["t"])).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts["v1"])
