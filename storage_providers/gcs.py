"""Google Cloud Storage via google-cloud-storage; large files go through gcs_resumable, which resumes them, and a
live output whose parts went ahead while recording is composed from them server-side (gcs_compose)."""
from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from pydantic import AliasChoices, Field, field_validator

from storage_providers.base import (
    HASH_BLOCK,
    ChecksumMismatchError,
    IncompleteUpload,
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
from storage_providers.gcs_compose import ComposeUploader, NotAdoptable, parts_prefix
from storage_providers.gcs_resumable import SDK_RETRY_SECONDS, ResumableUploader, sdk_retry

log = logging.getLogger(__name__)

CHUNK_ALIGN = 256 * 1024
"""GCS resumable chunks must be multiples of 256 KiB."""

MAX_SIGNED_SECONDS = 7 * 24 * 3600
"""V4 signed URLs cannot outlive a week."""

EMULATOR_PROJECT = "tapedeck-emulator"
READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


class GcsSettings(PartedSettings):
    """The bucket, and where credentials come from (a key file, the emulator or ADC)."""

    bucket: str = Field(validation_alias="GCS_BUCKET")
    emulator_host: str | None = Field(None, validation_alias="STORAGE_EMULATOR_HOST")
    credentials_file: str | None = Field(
        None, validation_alias=AliasChoices("GCS_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS"))
    project: str | None = Field(None, validation_alias="GOOGLE_CLOUD_PROJECT")

    @property
    def chunk_size(self) -> int:
        """STORAGE_PART_SIZE rounded down to the 256 KiB multiple GCS requires."""
        return self.part_size // CHUNK_ALIGN * CHUNK_ALIGN

    @field_validator("emulator_host")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        value = (value or "").rstrip("/")
        return (value if "://" in value else f"http://{value}") if value else None

    @field_validator("credentials_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value and not os.path.isfile(value):
            raise ValueError("is not a readable file")
        return value


@dataclass(frozen=True)
class _Digests:
    sha256: str
    md5: str
    crc32c: str


def _digests(path: Path) -> _Digests:
    """SHA-256 for the metadata, MD5 and CRC32C to compare with what GCS computed, in one read."""
    import google_crc32c

    sha, md5, crc = hashlib.sha256(), hashlib.md5(), google_crc32c.Checksum()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            sha.update(block)
            md5.update(block)
            crc.update(block)
    return _Digests(sha.hexdigest(), base64.b64encode(md5.digest()).decode(),
                    base64.b64encode(crc.digest()).decode())


class GcsStorage(StorageProvider):
    """One bucket. Clients are built on first use, per process (prefork workers)."""

    name = "gcs"

    def __init__(self, settings: GcsSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._client_pid = 0
        self._credentials: Any = None
        self._transport: Any = None
        self._file_credentials: Any = None

    @property
    def client(self) -> Any:
        """A storage.Client, rebuilt after fork so prefork workers never share connections."""
        self._connect()
        return self._client

    @property
    def credentials(self) -> Any:
        """The credentials this process's client uses (anonymous for the emulator)."""
        self._connect()
        return self._credentials

    @property
    def transport(self) -> Any:
        """This process's AuthorizedSession, for resumable uploads (google-resumable-media)."""
        self._connect()
        return self._transport

    def _connect(self) -> None:
        """Build credentials, client and upload session once per process (after a fork, anew)."""
        if self._client is None or self._client_pid != os.getpid():
            try:
                from google.cloud import storage
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise StorageConfigError("the gcs provider needs google-cloud-storage: "
                                         "pip install google-cloud-storage") from exc
            from google.auth.transport.requests import AuthorizedSession

            s = self.settings
            if s.emulator_host:
                from google.auth.credentials import AnonymousCredentials

                self._credentials = AnonymousCredentials()
                self._client = storage.Client(project=s.project or EMULATOR_PROJECT, credentials=self._credentials,
                                              client_options={"api_endpoint": s.emulator_host})
            else:
                credentials, project = self._signing_file_credentials(), None
                if credentials is None:  # Application Default Credentials (a VM's or workload's own account)
                    import google.auth

                    credentials, project = google.auth.default(scopes=[READ_WRITE_SCOPE])
                self._credentials = credentials
                project = s.project or getattr(credentials, "project_id", None) or project
                self._client = storage.Client(project=project, credentials=credentials)
            self._transport = AuthorizedSession(self._credentials)
            self._client_pid = os.getpid()

    def _signing_file_credentials(self) -> Any:
        """The service-account key from GCS_CREDENTIALS_FILE, if any; it can also sign URLs."""
        if self._file_credentials is None and self.settings.credentials_file:
            from google.oauth2 import service_account

            self._file_credentials = service_account.Credentials.from_service_account_file(
                self.settings.credentials_file, scopes=[READ_WRITE_SCOPE])
        return self._file_credentials

    @contextmanager
    def translating(self, action: str, key: str) -> Iterator[None]:
        """Turn google-api-core, media and transport failures into the storage errors."""
        import requests
        from google.api_core import exceptions as api
        from google.auth.exceptions import GoogleAuthError, TransportError
        from google.resumable_media.common import DataCorruption, InvalidResponse  # storage's own subclass these

        try:
            yield
        except api.NotFound:
            raise ObjectNotFoundError(key) from None
        except api.GoogleAPICallError as exc:
            self._raise_for_status(action, key, int(exc.code or 0), type(exc).__name__)
        except DataCorruption:
            raise ChecksumMismatchError(self._message(action, key, "checksum mismatch")) from None
        except InvalidResponse as exc:
            status = int(getattr(exc.response, "status_code", 0) or 0)
            if status == 404:
                raise ObjectNotFoundError(key) from None
            self._raise_for_status(action, key, status, "unexpected response")
        except (requests.ConnectionError, requests.Timeout, TransportError, api.RetryError) as exc:
            raise StorageUnavailableError(self._message(action, key, str(exc))) from None
        except GoogleAuthError as exc:
            raise PermanentStorageError(self._message(action, key, str(exc))) from None

    def _raise_for_status(self, action: str, key: str, status: int, detail: str) -> None:
        message = self._message(action, key, f"{detail} (HTTP {status or '?'})")
        if status >= 500 or status in (408, 429):
            raise StorageUnavailableError(message) from None
        raise PermanentStorageError(message) from None

    def _message(self, action: str, key: str, detail: str) -> str:
        return scrub_secrets(f"gcs {action} of {key!r} failed: {detail}", ())

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
        check_key(key)
        total = os.path.getsize(path)
        if checkpoint is not None:
            with self.translating("upload", key):
                if self._compose_ahead(key, path, total, content_type, dict(metadata or {}), progress, checkpoint):
                    return ObjectInfo(key=key, size=total, content_type=content_type, metadata=dict(metadata or {}))
        digests = _digests(path)
        meta = {**(metadata or {}), "sha256": digests.sha256}
        with self.translating("upload", key):
            blob = self.client.bucket(self.settings.bucket).blob(key)
            blob.metadata = meta
            if total <= self.settings.chunk_size:
                blob.upload_from_filename(str(path), content_type=content_type, checksum="crc32c",
                                          retry=sdk_retry())
                if progress:
                    progress(total, total)
            else:
                stored = self._uploader().upload(blob, path, total, content_type, digests.sha256,
                                                 progress, checkpoint)
                if stored.get("md5Hash", digests.md5) != digests.md5 or \
                        stored.get("crc32c", digests.crc32c) != digests.crc32c:
                    raise ChecksumMismatchError(f"gcs stored different bytes for {key!r}")
        return ObjectInfo(key=key, size=total, content_type=content_type, metadata=meta)

    def _compose_ahead(self, key: str, path: Path, total: int, content_type: str, meta: dict[str, str],
                       progress: ProgressCallback | None, checkpoint: UploadCheckpoint) -> bool:
        """True when the file was composed from the parts sent ahead while recording (a live output, its
        `sha256-parts` metadata naming the bytes): no whole-file read, the object keeps every metadata. Parts
        that cannot make this file are deleted, and False sends it through the whole-file upload."""
        composer = self._composer()
        state = checkpoint.load()
        if not composer.owns(state, key):
            return False
        if "sha256-parts" in meta:
            try:
                composer.complete(key, path, total, content_type, meta, progress, checkpoint)
                return True
            except NotAdoptable as exc:
                log.warning("gcs parts sent ahead of %s not used, uploading it whole: %s", key, exc)
        composer.discard(state)  # type: ignore[arg-type]
        checkpoint.clear()
        return False

    def upload_ahead(self, key: str, path: Path, numbers: list[int], *, content_type: str,
                     metadata: Mapping[str, str], checkpoint: UploadCheckpoint, limit: int | None = None) -> int:
        """Parts (STORAGE_PART_SIZE) of a file still being written, uploaded as hidden temporaries and composed
        into one growing object as they come (live finalize); upload_file with `sha256-parts` metadata and the
        same checkpoint composes the final object from them. Metadata is given at that final compose."""
        check_key(key)
        with self.translating("upload", key):
            return self._composer().upload_ahead(key, path, numbers, content_type, checkpoint, limit)

    def _composer(self) -> ComposeUploader:
        """The parts-ahead machinery, bound to this process's client."""
        return ComposeUploader(self.client.bucket(self.settings.bucket), self.transport, self.settings.part_size,
                               self.name)

    def incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Parts sent ahead of a final object and still stored (a compose never made, or its cleanup lost)."""
        with self.translating("list uploads", prefix):
            yield from self._composer().incomplete(prefix)

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        with self.translating("abort", upload.key):
            self._composer().delete_prefix(parts_prefix(check_key(upload.key), upload.upload_id))

    def _uploader(self) -> ResumableUploader:
        """The resumable-session machinery, bound to this process's client."""
        return ResumableUploader(self.transport, self.settings.bucket, self.settings.chunk_size, self.name)

    def abort_upload(self, key: str, checkpoint: UploadCheckpoint) -> None:
        """Cancel the session (GCS keeps unfinished bytes for a week otherwise), or delete the parts sent ahead;
        best effort. The final object is never touched."""
        state = checkpoint.load()
        if state and state.get("provider") == self.name and state.get("upload_id"):
            with self.translating("abort", key):
                self._composer().discard(state)
        if state and state.get("provider") == self.name and state.get("session_url"):
            from google.auth.exceptions import GoogleAuthError
            from requests import RequestException

            try:  # any answer ends it: real GCS answers 499, the emulator 501
                self.transport.request("DELETE", state["session_url"], timeout=SDK_RETRY_SECONDS)
            except (RequestException, GoogleAuthError) as exc:  # unreachable: said, so the caller can log it
                checkpoint.clear()
                raise StorageUnavailableError(self._message("abort", key, type(exc).__name__)) from None
        checkpoint.clear()

    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        with self.translating("head", key):
            blob = self.client.bucket(self.settings.bucket).get_blob(key, retry=sdk_retry())
        if blob is None:
            raise ObjectNotFoundError(key)
        return ObjectInfo(key=key, size=int(blob.size or 0), content_type=blob.content_type,
                          metadata=dict(blob.metadata or {}))

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            with self.translating("delete", key):
                self.client.bucket(self.settings.bucket).blob(key).delete(retry=sdk_retry())
        except ObjectNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under prefix, parts sent ahead (`.tapedeck-parts/`) included: purge deletes what it lists."""
        with self.translating("list", prefix):
            for blob in self.client.list_blobs(self.settings.bucket, prefix=prefix or None,
                                               retry=sdk_retry()):
                yield ObjectInfo(key=blob.name, size=int(blob.size or 0), content_type=blob.content_type,
                                 metadata=dict(blob.metadata or {}))

    def download_url(self, key: str, expires_in: int) -> str:
        """A V4 signed URL; with the emulator and no key file, its plain media link."""
        check_key(key)
        if self._signing_file_credentials() is None and self.settings.emulator_host:
            return (f"{self.settings.emulator_host}/download/storage/v1/b/{self.settings.bucket}"
                    f"/o/{quote(key, safe='')}?alt=media")
        seconds = max(1, min(int(expires_in), MAX_SIGNED_SECONDS))
        with self.translating("sign", key):
            credentials, extra = self._signer()
            return self.client.bucket(self.settings.bucket).blob(key).generate_signed_url(
                version="v4", method="GET", expiration=datetime.timedelta(seconds=seconds),
                credentials=credentials, **extra)

    def _signer(self) -> tuple[Any, dict[str, Any]]:
        """Who signs: the key file, the client's own key, or IAM signBlob for an attached account."""
        credentials = self._signing_file_credentials() or self.credentials
        if hasattr(credentials, "sign_bytes") and getattr(credentials, "signer_email", None):
            return credentials, {}
        email = getattr(credentials, "service_account_email", None)  # e.g. Cloud Run, GCE
        if not email:
            raise StorageConfigError("gcs download URLs need a service-account key: set GCS_CREDENTIALS_FILE")
        import google.auth.transport.requests

        credentials.refresh(google.auth.transport.requests.Request())
        return credentials, {"service_account_email": email, "access_token": credentials.token}

    def check(self) -> None:
        with self.translating("check", self.settings.bucket):
            if self.client.lookup_bucket(self.settings.bucket, retry=sdk_retry()) is None:
                raise PermanentStorageError(f"GCS_BUCKET {self.settings.bucket!r} does not exist")


def create(env: Mapping[str, str]) -> GcsStorage:
    return GcsStorage(GcsSettings.from_env(env))


__all__ = ["GcsSettings", "GcsStorage", "create"]
