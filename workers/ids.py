"""Identifier rules shared by routes, staging paths and keys (ids become file names and key parts)."""
from __future__ import annotations

import re
import uuid

from workers.errors import InvalidRequest

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Rooms, participants and recordings: safe as path components and Redis key parts."""

STREAM_TYPES = ("video", "audio")
MAX_SEQUENCE = 10_000_000


def check_id(value: object, field: str) -> str:
    """Return value when it is a well-formed id, else raise InvalidRequest naming the field."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidRequest(f"{field} must match [A-Za-z0-9_-]{{1,64}}", field=field)
    return value


def check_stream_type(value: object) -> str:
    if value not in STREAM_TYPES:
        raise InvalidRequest('type must be "video" or "audio"', field="type")
    return value  # type: ignore[return-value]


def check_sequence(value: object) -> int:
    """Sequences are integers 0..10,000,000; bools and floats are rejected, digit strings from paths are not."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 8:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQUENCE:
        raise InvalidRequest(f"sequence must be an integer from 0 to {MAX_SEQUENCE}", field="sequence")
    return value


def new_recording_id() -> str:
    return f"rec_{uuid.uuid4().hex}"
