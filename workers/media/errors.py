"""The media layer's one error: what it raises when bytes cannot be read or written as media."""
from __future__ import annotations


class MediaError(Exception):
    """Raised when a participant's media cannot be read or written; fails that participant only."""

    code = "media_error"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
