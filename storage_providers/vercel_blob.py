"""Vercel Blob via the vercel-blob SDK: public blobs, multipart for large files, no custom metadata.

Vercel Blob keeps no user metadata, so head() returns none (stores_metadata is False): the
recording's ids, durations and checksums live in manifest.json beside the media. Its multipart
API has no abort and no list of parts, so a retried upload starts again; the one exception is a
live output's upload whose parts were sent while recording (upload_ahead, vercel_multipart.py),
which the finalize after stop completes from the parts its checkpoint records.

Blob URLs are public and never expire (download_url() cannot honour expires_in), so a URL must not
be guessable: each logical key (recordings/<room>/<id>/<pid>.webm) is stored under a pathname with
an HMAC-SHA256 suffix (recordings/<room>/<id>/<pid>-<32 hex>.webm) keyed with VERCEL_BLOB_KEY_SECRET,
or the token's secret part when that is unset. The suffix is deterministic, so a retry overwrites the
same blob; every method takes and returns logical keys. Deleting the recording revokes its links.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from pydantic import Field, field_validator, model_validator

from storage_providers.base import (
    ObjectInfo,
    ObjectNotFoundError,
    ProgressCallback,
    PartedSettings,
    StorageConfigError,
    PermanentStorageError,
    StorageError,
    StorageProvider,
    StorageUnavailableError,
    UploadCheckpoint,
    check_key,
    scrub_secrets,
)
from storage_providers.vercel_multipart import BlobMultipart, adoptable, finish, send_ahead

log = logging.getLogger(__name__)

TOKEN_PREFIX = "vercel_blob_rw_"
"""Read-write tokens look like vercel_blob_rw_<store id>_<secret>."""

ACCESS = "public"
"""Recordings are stored as public blobs: the unguessable URL is the download link."""
SUFFIX_HEX = 32
"""128 bits of HMAC in each stored name: not guessable, short enough for a readable URL."""
STORED_NAME = re.compile(rf"^(?P<stem>.+)-(?P<suffix>[0-9a-f]{{{SUFFIX_HEX}}})(?P<ext>\.[^./]*)?$")


def _token_parts(token: str) -> tuple[str, str]:
    """(store id, secret) of a vercel_blob_rw_<store>_<secret> token."""
    store_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    return store_id, secret


class VercelBlobSettings(PartedSettings):
    """The store's read-write token and the key-suffix secret (never in repr), and an optional API base URL."""

    secret_variables: ClassVar[frozenset[str]] = frozenset({"BLOB_READ_WRITE_TOKEN", "VERCEL_BLOB_KEY_SECRET"})

    token: str = Field(repr=False, validation_alias="BLOB_READ_WRITE_TOKEN")
    api_url: str | None = Field(None, validation_alias="VERCEL_BLOB_API_URL")
    key_secret: str = Field("", repr=False, validation_alias="VERCEL_BLOB_KEY_SECRET")
    """Unset: the token's secret part."""

    @property
    def store_id(self) -> str:
        return _token_parts(self.token)[0]

    @field_validator("token")
    @classmethod
    def _token_format(cls, token: str) -> str:
        store_id, secret = _token_parts(token)
        if not token.startswith(TOKEN_PREFIX) or not store_id or not secret:
            raise ValueError("has an invalid format (expected vercel_blob_rw_<store>_<secret>)")
        return token

    @field_validator("api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return (value or "").rstrip("/") or None

    @model_validator(mode="before")
    @classmethod
    def _key_secret_default(cls, data: Any) -> Any:
        token = data.get("BLOB_READ_WRITE_TOKEN") if isinstance(data, dict) else None
        if isinstance(token, str) and not data.get("VERCEL_BLOB_KEY_SECRET"):
            data["VERCEL_BLOB_KEY_SECRET"] = _token_parts(token)[1]
        return data


class VercelBlobStorage(StorageProvider):
    """One Blob store. Each operation runs in its own SDK session, so nothing outlives a fork."""

    name = "vercel-blob"
    stores_metadata = False

    def __init__(self, settings: VercelBlobSettings) -> None:
        self.settings = settings

    def _suffix(self, key: str) -> str:
        digest = hmac.new(self.settings.key_secret.encode(), key.encode(), hashlib.sha256).hexdigest()
        return digest[:SUFFIX_HEX]

    def pathname(self, key: str) -> str:
        """Where a logical key is stored: its name with a keyed suffix before the extension."""
        folder, slash, name = check_key(key).rpartition("/")
        stem, dot, ext = name.rpartition(".")
        if not stem:  # no extension (or a dotfile): append the suffix
            stem, dot, ext = name, "", ""
        return f"{folder}{slash}{stem}-{self._suffix(key)}{dot}{ext}"

    def logical_key(self, pathname: str) -> str | None:
        """The logical key a stored pathname holds, or None for a blob this scheme did not name."""
        folder, slash, name = pathname.rpartition("/")
        found = STORED_NAME.match(name)
        if not found:
            return None
        key = f"{folder}{slash}{found['stem']}{found['ext'] or ''}"
        return key if hmac.compare_digest(self._suffix(key), found["suffix"]) else None

    def _credentials(self) -> Any:
        from vercel.blob.sync import BlobCredentials, CredentialKind

        return BlobCredentials(self.settings.token, self.settings.store_id, CredentialKind.READ_WRITE)

    @contextmanager
    def _sdk(self, action: str, key: str) -> Iterator[Any]:
        """The sync SDK bound to this store's URL and token, with its errors translated."""
        try:
            from vercel.api import session
            from vercel.blob import sync as blob
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StorageConfigError("the vercel-blob provider needs the SDK: pip install vercel-blob") from exc
        options = blob.SyncBlobServiceOptions(
            base_url=self.settings.api_url, credentials_factory=self._credentials
        )
        try:
            with session(service_options=[options]):
                yield blob
        except blob.BlobNotFoundError:
            raise ObjectNotFoundError(key) from None
        except blob.BlobError as exc:
            status = exc.status_code
            message = scrub_secrets(
                f"vercel-blob {action} of {key!r} failed: {exc} (HTTP {status or '?'})",
                (self.settings.token, self.settings.key_secret)
            )
            retryable = (blob.BlobServiceNotAvailable, blob.BlobServiceRateLimited, blob.BlobUnknownError)
            if isinstance(exc, retryable) or (status or 0) >= 500:
                raise StorageUnavailableError(message) from None
            raise PermanentStorageError(message) from None

    def upload_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        checkpoint: UploadCheckpoint | None = None,
    ) -> ObjectInfo:
        stored = self.pathname(key)
        total = os.path.getsize(path)
        parts_identity = (metadata or {}).get("sha256-parts")
        if checkpoint and parts_identity and total > self.settings.part_size \
                and self._finish_ahead(key, path, total, content_type, parts_identity, progress, checkpoint):
            checkpoint.clear()
            return ObjectInfo(key=key, size=total, content_type=content_type, metadata={})
        options = {"access": ACCESS, "content_type": content_type, "allow_overwrite": True}
        with self._sdk("upload", key) as blob, open(path, "rb") as source:
            if total <= self.settings.part_size:
                blob.put_blob(stored, source, content_length=total, **options)
                if progress:
                    progress(total, total)
            else:
                sent = 0
                with blob.multipart_upload_blob(stored, **options) as upload:
                    while chunk := source.read(self.settings.part_size):
                        upload.upload_part(chunk)
                        sent += len(chunk)
                        if progress:
                            progress(sent, total)
        if checkpoint:
            checkpoint.clear()  # nothing to resume: the SDK restarts multipart uploads
        return ObjectInfo(key=key, size=total, content_type=content_type, metadata={})

    def _finish_ahead(self, key: str, path: Path, total: int, content_type: str, identity: str,
                      progress: ProgressCallback | None, checkpoint: UploadCheckpoint) -> bool:
        """Complete the upload whose parts a live output sent while recording (the header's part 1 and the tail
        go now); False when there is none for this file, or Vercel no longer has it (expired, unknown: the caller
        uploads the file whole). An outage (StorageUnavailableError) propagates with the checkpoint kept, so the
        retry completes the same upload."""
        stored = self.pathname(key)
        state = adoptable(checkpoint.load(), stored, self.settings.part_size, total, identity)
        if state is None:
            return False
        try:
            with self._sdk("upload", key):
                finish(BlobMultipart(stored, content_type, ACCESS), state, path, progress, checkpoint)
        except PermanentStorageError as exc:
            log.warning("parts of %s sent while recording are unusable, uploading it whole: %s", key, exc)
            checkpoint.clear()
            return False
        return True

    def upload_ahead(self, key: str, path: Path, numbers: list[int], *, content_type: str,
                     metadata: Mapping[str, str], checkpoint: UploadCheckpoint, limit: int | None = None) -> int:
        """Parts of a live output still being written, sent before it is complete; upload_file with `sha256-parts`
        metadata and the same checkpoint completes them. Parts are STORAGE_PART_SIZE bytes; Vercel keeps no
        metadata, so `metadata` is not sent (the manifest carries it)."""
        with self._sdk("upload", key):
            return send_ahead(BlobMultipart(self.pathname(key), content_type, ACCESS), path, numbers,
                              self.settings.part_size, checkpoint, limit)

    def abort_upload(self, key: str, checkpoint: UploadCheckpoint) -> None:
        """Forget the upload: Vercel Blob has no abort call for a multipart upload, and one never completed is no
        blob (nothing shows at the pathname); its parts are left to Vercel to drop."""
        checkpoint.clear()

    def head(self, key: str) -> ObjectInfo:
        stored = self.pathname(key)
        with self._sdk("head", key) as blob:
            found = blob.head_blob(stored)
        return ObjectInfo(key=key, size=found.size, content_type=found.content_type, metadata={})

    def delete(self, key: str) -> None:
        stored = self.pathname(key)
        with self._sdk("delete", key) as blob:
            blob.delete_blob(stored)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Read every page inside the session: a generator suspended within it would leak the
        # SDK's context-bound session into the caller between items.
        # Stored names differ from keys after the last "/", so list the prefix's folder and match keys.
        folder = prefix[:prefix.rfind("/") + 1]
        with self._sdk("list", prefix) as blob:
            stored = [(item.pathname, item.size) for item in blob.query_blobs(prefix=folder or None)]
        for pathname, size in stored:
            key = self.logical_key(pathname)
            if key is not None and key.startswith(prefix):
                yield ObjectInfo(key=key, size=size)

    def download_url(self, key: str, expires_in: int) -> str:
        """The blob's public URL: unguessable by its suffix, but it never expires (expires_in cannot apply)."""
        stored = self.pathname(key)
        with self._sdk("head", key) as blob:
            return blob.head_blob(stored).url


def create(env: Mapping[str, str]) -> VercelBlobStorage:
    return VercelBlobStorage(VercelBlobSettings.from_env(env))


__all__ = ["VercelBlobSettings", "VercelBlobStorage", "create"]
