"""Headers of raw chunk uploads beyond the timestamp: Repr-Digest (RFC 9530), checked before anything is kept,
and Tapedeck-Final (end of stream)."""
from __future__ import annotations

import base64
import binascii
import re

from workers.errors import InvalidRequest

HEADER = "Repr-Digest"
MAX_HEADER_CHARS = 1024
"""A header listing a few algorithms fits easily; anything longer is refused before parsing."""
_MEMBER = re.compile(r"^([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/]*={0,2}):$")


def _bad(reason: str) -> InvalidRequest:
    return InvalidRequest(f"{HEADER}: {reason} (expected sha-256=:<base64>:)", field=HEADER)


def sha256_from_repr_digest(value: str | None) -> str | None:
    """The lowercase hex SHA-256 named by the header; None without one. Other algorithms are ignored, as RFC 9530
    lets a recipient do; a malformed header or a sha-256 that is not 32 bytes is 400."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_HEADER_CHARS:
        raise _bad("too long")
    found = None
    for member in value.split(","):
        match = _MEMBER.match(member.strip())
        if match is None:
            raise _bad("not a dictionary of byte sequences")
        if match.group(1) != "sha-256":
            continue
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("sha-256 is not base64") from None
        if len(raw) != 32:
            raise _bad("sha-256 must be 32 bytes")
        found = raw.hex()
    return found


def parse_final_header(value: str | None) -> bool:
    """Tapedeck-Final: "true" marks the stream's last chunk; absent or "false" does not; anything else is 400."""
    if value is None or value.strip().lower() in ("", "false"):
        return False
    if value.strip().lower() == "true":
        return True
    raise InvalidRequest("Tapedeck-Final must be true or false", field="Tapedeck-Final")
