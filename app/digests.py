"""Headers of raw chunk uploads beyond the timestamp: Repr-Digest and Content-Digest (RFC 9530), checked before
anything is kept, and Tapedeck-Final (end of stream).

Content-Digest covers the message content, which is exactly the bytes the PUT delivers and the server stores (it
decodes no Content-Encoding), so it is verified like Repr-Digest; a client sending only it must not get corrupted
bytes accepted."""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

from workers.errors import InvalidRequest

HEADER = "Repr-Digest"
CONTENT_HEADER = "Content-Digest"
MAX_HEADER_CHARS = 1024
"""A header listing a few algorithms fits easily; anything longer is refused before parsing."""
_MEMBER = re.compile(r"^([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/]*={0,2}):$")


def _bad(reason: str, header: str) -> InvalidRequest:
    return InvalidRequest(f"{header}: {reason} (expected sha-256=:<base64>:)", field=header)


def sha256_from_repr_digest(value: str | None, header: str = HEADER) -> str | None:
    """The lowercase hex SHA-256 named by a Repr-Digest or Content-Digest header; None without one. Other
    algorithms are ignored, as RFC 9530 lets a recipient do; a malformed header or a sha-256 that is not 32 bytes
    is 400."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_HEADER_CHARS:
        raise _bad("too long", header)
    found = None
    for member in value.split(","):
        match = _MEMBER.match(member.strip())
        if match is None:
            raise _bad("not a dictionary of byte sequences", header)
        if match.group(1) != "sha-256":
            continue
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("sha-256 is not base64", header) from None
        if len(raw) != 32:
            raise _bad("sha-256 must be 32 bytes", header)
        found = raw.hex()
    return found


def sha256s_from_headers(headers) -> set[str]:
    """Every SHA-256 the PUT's Repr-Digest and Content-Digest name (both parsed, so either malformed is 400)."""
    named = (sha256_from_repr_digest(headers.get(HEADER)),
             sha256_from_repr_digest(headers.get(CONTENT_HEADER), CONTENT_HEADER))
    return {digest for digest in named if digest is not None}


def sha256_to_verify(named: set[str], data: bytes) -> str | None:
    """The one SHA-256 the intake verifies. When the two headers disagree the bytes cannot match both: hand on the
    one they miss, so the usual check answers checksum_mismatch in its usual place (after the size)."""
    if len(named) <= 1:
        return next(iter(named), None)
    received = hashlib.sha256(data).hexdigest()
    return next(digest for digest in sorted(named) if digest != received)


def parse_final_header(value: str | None) -> bool:
    """Tapedeck-Final: "true" marks the stream's last chunk; absent or "false" does not; anything else is 400."""
    if value is None or value.strip().lower() in ("", "false"):
        return False
    if value.strip().lower() == "true":
        return True
    raise InvalidRequest("Tapedeck-Final must be true or false", field="Tapedeck-Final")
