"""GCS resumable-upload sessions that survive a worker restart: the session URL and confirmed offset
live in the checkpoint, so another process can adopt the session and send only what is missing.

Sessions are driven with google-resumable-media (the public resumable-upload library google-cloud-storage depends
on, pinned in requirements.txt), over an AuthorizedSession the provider builds from its own credentials: nothing
here reaches into google-cloud-storage's internals. The one thing no library offers publicly is adopting a session
another process opened; `_attach` does it the way google-resumable-media's own documentation does, and
tests/test_storage_gcs.py checks those fields still exist so an upgrade fails a test, not an upload."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from storage_providers.base import ProgressCallback, UploadCheckpoint

SDK_RETRY_SECONDS = 30.0
"""How long the SDK itself retries one request; the task's own retries with backoff take over after."""


def sdk_retry() -> Any:
    """The SDK's own retry policy, bounded so the caller's backoff decides what happens next."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(SDK_RETRY_SECONDS)


@dataclass(frozen=True)
class ResumableUploader:
    """One bucket's resumable sessions over one client's transport; SDK errors pass through untranslated."""

    transport: Any
    bucket: str
    chunk_size: int
    provider: str = "gcs"

    def upload(self, blob: Any, path: Path, total: int, content_type: str, sha256: str,
               progress: ProgressCallback | None, checkpoint: UploadCheckpoint | None) -> dict:
        """Send the file through a resumable session, saving the confirmed offset after each chunk."""
        from google.resumable_media.common import InvalidResponse

        state = checkpoint.load() if checkpoint else None
        wanted = {"provider": self.provider, "bucket": self.bucket, "key": blob.name,
                  "size": total, "sha256": sha256}
        if not state or any(state.get(name) != value for name, value in wanted.items()):
            state = self._open_session(blob, wanted, content_type, checkpoint)
        with open(path, "rb") as stream:
            upload = self._attach(state["session_url"], stream, total, content_type)
            if state["confirmed"]:  # ask the server: its confirmed offset wins over ours
                try:
                    upload.recover(self.transport)
                except InvalidResponse as exc:
                    status = getattr(exc.response, "status_code", 0)
                    if status in (200, 201):  # finished before the checkpoint was cleared
                        if checkpoint:
                            checkpoint.clear()
                        return exc.response.json()
                    if status not in (404, 410):
                        raise
                    state = self._open_session(blob, wanted, content_type, checkpoint)  # expired
                    upload = self._attach(state["session_url"], stream, total, content_type)
            if progress and upload.bytes_uploaded:
                progress(upload.bytes_uploaded, total)
            response = None
            while not upload.finished:
                response = upload.transmit_next_chunk(self.transport, timeout=SDK_RETRY_SECONDS * 2)
                state["confirmed"] = upload.bytes_uploaded
                if checkpoint:
                    checkpoint.save(state)
                if progress:
                    progress(upload.bytes_uploaded, total)
        if checkpoint:
            checkpoint.clear()
        return response.json() if response is not None else {}

    def _open_session(self, blob: Any, wanted: dict, content_type: str,
                      checkpoint: UploadCheckpoint | None) -> dict:
        """Start a resumable session (metadata travels with it) and remember its URL at once."""
        url = blob.create_resumable_upload_session(content_type=content_type, size=wanted["size"],
                                                   checksum=None, retry=sdk_retry())
        state = {**wanted, "session_url": url, "confirmed": 0}
        if checkpoint:
            checkpoint.save(state)
        return state

    def _attach(self, session_url: str, stream: BinaryIO, total: int, content_type: str) -> Any:
        """A ResumableUpload bound to a saved session URL, so another process can continue it."""
        return attach_session(session_url, self.chunk_size, stream, total, content_type)


ADOPTED_FIELDS = ("_resumable_url", "_stream", "_total_bytes", "_content_type", "_retry_strategy")
"""What attach_session sets on a ResumableUpload (checked against the installed library by a test)."""


def attach_session(session_url: str, chunk_size: int, stream: BinaryIO, total: int, content_type: str) -> Any:
    """A google-resumable-media ResumableUpload bound to an existing session: the fields initiate() would set, as
    the library's own docs set them (it has no public adopt). No streaming checksum: a resumed upload never sees
    the bytes sent before the restart, so upload_file() compares MD5/CRC32C of the whole file instead."""
    from google import resumable_media
    from google.resumable_media.requests import ResumableUpload

    upload = ResumableUpload(session_url, chunk_size, checksum=None)
    upload._retry_strategy = resumable_media.RetryStrategy(max_cumulative_retry=SDK_RETRY_SECONDS)
    upload._resumable_url = session_url
    upload._stream = stream
    upload._total_bytes = total
    upload._content_type = content_type
    return upload


__all__ = ["ADOPTED_FIELDS", "SDK_RETRY_SECONDS", "ResumableUploader", "attach_session", "sdk_retry"]
