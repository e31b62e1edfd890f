"""The per-process cache of verified tokens never lets a token outlive its exp or a changed byte through."""
from __future__ import annotations

import time

import jwt
import pytest

from app.auth import ALGORITHM, decode_token, mint_token
from workers.errors import Unauthorized

SECRET = "cache-test-secret-0123456789abcdef0123456789"


def test_a_remembered_token_still_expires():
    now = time.time()
    token = jwt.encode({"sub": "alice", "room": "r1", "role": "host", "exp": now + 1.5}, SECRET, algorithm=ALGORITHM)
    assert decode_token(token, SECRET).sub == "alice"
    assert decode_token(token, SECRET).sub == "alice"  # now served from the cache
    time.sleep(1.6)
    with pytest.raises(Unauthorized, match="expired"):
        decode_token(token, SECRET)


def test_a_changed_byte_or_secret_is_verified_afresh():
    token = mint_token(SECRET, "r1", "alice", "participant")
    decode_token(token, SECRET)
    head, body, signature = token.split(".")
    forged = ".".join([head, body, ("A" if signature[0] != "A" else "B") + signature[1:]])
    with pytest.raises(Unauthorized, match="invalid"):
        decode_token(forged, SECRET)
    with pytest.raises(Unauthorized, match="invalid"):
        decode_token(token, SECRET + "-rotated")
    assert decode_token(token, SECRET).role == "participant"
