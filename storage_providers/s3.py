"""S3 (or any S3-compatible store) via boto3; large files go through s3_multipart, which resumes them."""
from __future__ import annotations

import base64
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from pydantic import AliasChoices, Field, field_validator

from storage_providers.base import (
    IncompleteUpload,
    ChecksumMismatchError,
    caller_sha256,
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
    sha256_file,
)
from storage_providers.s3_multipart import MultipartUploader, check_echo

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4 presigned URLs cannot outlive a week."""

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
RETRYABLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
     "RequestTimeout", "InternalError", "ServiceUnavailable", "503"}
)
CHECKSUM_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


class S3Settings(PartedSettings):
    """Where and how to reach the bucket; secrets stay out of repr()."""

    raw_variables: ClassVar[frozenset[str]] = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                         "AWS_SESSION_TOKEN"})

    bucket: str = Field(validation_alias="S3_BUCKET")
    endpoint_url: str | None = Field(None, validation_alias="S3_ENDPOINT_URL")
    region: str = Field("us-east-1", validation_alias=AliasChoices("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    force_path_style: bool = Field(False, validation_alias="S3_FORCE_PATH_STYLE")
    prefix: str = Field("", validation_alias="S3_PREFIX")
    """Stored as "a/b/" (or ""), so a key is prefix + key."""
    max_attempts: int = Field(3, ge=1, le=20, validation_alias="AWS_MAX_ATTEMPTS")
    access_key_id: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    secret_access_key: str | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    session_token: str | None = Field(None, validation_alias="AWS_SESSION_TOKEN")

    @field_validator("prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        value = value.strip().strip("/")
        return f"{value}/" if value else ""

    def __repr__(self) -> str:
        """Without keys, and without any user-info an endpoint URL may carry."""
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in
                          ("bucket", "endpoint_url", "region", "force_path_style", "prefix", "part_size"))
        return scrub_secrets(f"S3Settings({shown})", self.secrets())

    def secrets(self) -> tuple[str | None, ...]:
        return (self.secret_access_key, self.session_token, self.access_key_id)


class S3Storage(StorageProvider):
    """One bucket (and optional key prefix). The boto3 client is built on first use, per process."""

    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._client_pid = 0

    @property
    def client(self) -> Any:
        """A boto3 S3 client, rebuilt after fork so prefork workers never share a connection pool."""
        if self._client is None or self._client_pid != os.getpid():
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise StorageConfigError("the s3 provider needs boto3: pip install boto3") from exc
            s = self.settings
            session = boto3.session.Session(aws_access_key_id=s.access_key_id, region_name=s.region,
                                            aws_secret_access_key=s.secret_access_key,
                                            aws_session_token=s.session_token)
            config = Config(signature_version="s3v4",
                            s3={"addressing_style": "path" if s.force_path_style else "auto"},
                            retries={"mode": "standard", "total_max_attempts": s.max_attempts})
            self._client = session.client("s3", endpoint_url=s.endpoint_url, config=config)
            self._client_pid = os.getpid()
        return self._client

    def prefixed_key(self, key: str) -> str:
        """The object's key in the bucket (S3_PREFIX first), checked; object-store staging uses it too."""
        return self.settings.prefix + check_key(key)

    @contextmanager
    def translating(self, action: str, key: str) -> Iterator[None]:
        """Turn botocore failures into the storage errors callers retry (or not) on."""
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in NOT_FOUND_CODES:
                raise ObjectNotFoundError(key) from None
            message = self._message(action, key, f"{code or 'error'} (HTTP {status or '?'})")
            if code in CHECKSUM_CODES:
                raise ChecksumMismatchError(message) from None
            if status >= 500 or status == 429 or code in RETRYABLE_CODES:
                raise StorageUnavailableError(message) from None
            raise PermanentStorageError(message) from None
        except (ConnectionError, HTTPClientError) as exc:
            raise StorageUnavailableError(self._message(action, key, str(exc))) from None
        except BotoCoreError as exc:
            raise PermanentStorageError(self._message(action, key, str(exc))) from None

    def _message(self, action: str, key: str, detail: str) -> str:
        return scrub_secrets(f"s3 {action} of {key!r} failed: {detail}", self.settings.secrets())

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
        full_key = self.prefixed_key(key)
        total = os.path.getsize(path)
        meta = dict(metadata or {})
        if "sha256-parts" not in meta or total <= self.settings.part_size:  # a live output's parts: no whole read
            meta["sha256"] = caller_sha256(metadata) or sha256_file(path)
        with self.translating("upload", key):
            if total <= self.settings.part_size:
                self._put(full_key, path, content_type, meta)
                if progress:
                    progress(total, total)
            else:
                self._uploader().upload(full_key, path, total, content_type, meta, progress, checkpoint)
        return ObjectInfo(key=key, size=total, content_type=content_type, metadata=meta)

    def _put(self, full_key: str, path: Path, content_type: str, meta: dict[str, str]) -> None:
        digest = base64.b64encode(bytes.fromhex(meta["sha256"])).decode()
        with open(path, "rb") as body:
            answer = self.client.put_object(
                Bucket=self.settings.bucket, Key=full_key, Body=body, ContentType=content_type,
                Metadata=meta, ChecksumSHA256=digest,
            )
        check_echo(answer, digest, full_key)

    def upload_ahead(self, key: str, path: Path, numbers: list[int], *, content_type: str,
                     metadata: Mapping[str, str], checkpoint: UploadCheckpoint, limit: int | None = None) -> int:
        """Parts of a file still being written, sent before it is complete (live finalize); upload_file with
        `sha256-parts` metadata and the same checkpoint completes them. Part sizes are STORAGE_PART_SIZE."""
        with self.translating("upload", key):
            return self._uploader().upload_ahead(self.prefixed_key(key), path, numbers, content_type, dict(metadata),
                                                 checkpoint, limit)

    def _uploader(self) -> MultipartUploader:
        """The multipart machinery, bound to this process's client."""
        return MultipartUploader(self.client, self.settings.bucket, self.settings.part_size, self.name)

    def abort_upload(self, key: str, checkpoint: UploadCheckpoint) -> None:
        state = checkpoint.load()
        if state:
            with self.translating("abort", key):
                self._uploader().abort(state)
        checkpoint.clear()

    def incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        skip = len(self.settings.prefix)
        with self.translating("list uploads", prefix):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix + prefix)
            for page in pages:
                for item in page.get("Uploads", []):
                    yield IncompleteUpload(key=item["Key"][skip:], upload_id=item["UploadId"],
                                           initiated=item["Initiated"].timestamp())

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        with self.translating("abort", upload.key):
            self._uploader().abort({"provider": self.name, "bucket": self.settings.bucket,
                                    "key": self.prefixed_key(upload.key), "upload_id": upload.upload_id})

    def head(self, key: str) -> ObjectInfo:
        with self.translating("head", key):
            answer = self.client.head_object(Bucket=self.settings.bucket, Key=self.prefixed_key(key))
        return ObjectInfo(key=key, size=int(answer["ContentLength"]), content_type=answer.get("ContentType"),
                          metadata=dict(answer.get("Metadata") or {}))

    def delete(self, key: str) -> None:
        with self.translating("delete", key):
            self.client.delete_object(Bucket=self.settings.bucket, Key=self.prefixed_key(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        skip = len(self.settings.prefix)
        with self.translating("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][skip:], size=int(item["Size"]))

    def download_url(self, key: str, expires_in: int) -> str:
        with self.translating("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.settings.bucket, "Key": self.prefixed_key(key)},
                ExpiresIn=max(1, min(int(expires_in), MAX_PRESIGN_SECONDS)))

    def check(self) -> None:
        try:
            with self.translating("check", self.settings.bucket):
                self.client.head_bucket(Bucket=self.settings.bucket)
        except ObjectNotFoundError:
            raise PermanentStorageError(f"S3_BUCKET {self.settings.bucket!r} does not exist") from None


def create(env: Mapping[str, str]) -> S3Storage:
    return S3Storage(S3Settings.from_env(env))


__all__ = ["S3Settings", "S3Storage", "create"]
