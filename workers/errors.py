"""One error hierarchy. Each class carries the stable `code` clients see; app/errors.py maps classes to HTTP."""
from __future__ import annotations


class TapedeckError(Exception):
    """Root of every error tapedeck raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ConfigurationError(TapedeckError):
    """Raised when the environment is missing or has a bad value; names the variable."""

    code = "configuration_error"


class Unauthorized(TapedeckError):
    """Raised when a request has no valid token."""

    code = "unauthorized"


class InvalidRequest(TapedeckError):
    """Raised when a body, path parameter or id has the wrong shape."""

    code = "invalid_request"


class InvalidBase64(InvalidRequest):
    """Raised when a chunk's base64 does not decode."""

    code = "invalid_base64"


class ChecksumMismatch(InvalidRequest):
    """Raised when a chunk's bytes do not hash to the SHA-256 its client sent: corrupted on the way, nothing kept."""

    code = "checksum_mismatch"


class PayloadTooLarge(TapedeckError):
    """Raised when a chunk is larger than MAX_CHUNK_BYTES."""

    code = "payload_too_large"


class NotFound(TapedeckError):
    """Raised when a recording does not exist."""

    code = "not_found"


class RoomNeverRecorded(NotFound):
    """Raised when a room has no recording: none was started, or the last one was deleted (404, code not_recording)."""

    code = "not_recording"


class Forbidden(TapedeckError):
    """Raised when the token's room, role or subject does not allow the action."""

    code = "forbidden"


class RecordingNotAccepting(TapedeckError):
    """Raised when a recording has stopped and no longer accepts chunks (409, code not_recording)."""

    code = "not_recording"


class AlreadyRecording(TapedeckError):
    """Raised when a room that is already recording is asked to start again."""

    code = "already_recording"


class InvalidState(TapedeckError):
    """Raised when a lifecycle action does not fit the recording's state (pause when not recording, resume when not
    paused, delete before it ended)."""

    code = "invalid_state"


class SequenceConflict(TapedeckError):
    """Raised when a sequence number arrives again with different bytes."""

    code = "sequence_conflict"


class ParticipantLimit(TapedeckError):
    """Raised when a new participant would exceed the recording's MAX_PARTICIPANTS."""

    code = "participant_limit"


class UnsupportedMedia(TapedeckError):
    """Raised when a header chunk is not a container tapedeck can read."""

    code = "unsupported_media"


class RateLimited(TapedeckError):
    """Raised when a caller is over a rate or concurrency limit (429, with Retry-After)."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1, **extra: object) -> None:
        super().__init__(message, **extra)
        self.retry_after = max(1, int(retry_after))


class Unavailable(TapedeckError):
    """Raised when Redis or the storage provider cannot be reached."""

    code = "unavailable"


class UploadFailed(TapedeckError):
    """Raised when an output could not be stored after every retry; the recording fails, chunks are kept."""

    code = "upload_failed"


class LockLost(TapedeckError):
    """Raised in a finalize whose lock expired or was taken: another run may be writing, so this one stops."""

    code = "lock_lost"
