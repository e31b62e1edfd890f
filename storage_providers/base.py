"""The storage interface every backend implements, and the errors they translate SDK failures into."""
from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, Mapping, Protocol

from pydantic import Field

from storage_providers.env_settings import EnvSettings

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes sent so far, total bytes) as an upload advances."""

HASH_BLOCK = 1024 * 1024

MIN_PART_SIZE = 5 * 1024 * 1024
"""The smallest part S3 and Vercel Blob accept (every part but the last)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024
"""STORAGE_PART_SIZE when unset: files larger than this upload in parts."""


class StorageError(Exception):
    """Root of every storage failure; catch a subclass to know whether a retry can help."""


class PermanentStorageError(StorageError):
    """Raised when the backend gave a definite answer (bad key, denied, no bucket): retrying will not fix it."""


class ObjectNotFoundError(PermanentStorageError, FileNotFoundError):
    """Raised when a key does not exist in the backend."""


class StorageUnavailableError(StorageError):
    """Raised when the backend cannot be reached or answered 5xx/429; retrying may help."""


class ChecksumMismatchError(StorageError):
    """Raised when the backend stored bytes whose checksum differs from what was sent."""


class StorageConfigError(PermanentStorageError, ValueError):
    """Raised at start-up when a provider's environment settings are missing or invalid."""


class UploadCheckpoint(Protocol):
    """Durable memory of an in-progress multipart/resumable upload, so a retry resumes it."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...

    def clear(self) -> None: ...


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload the backend still holds parts of (started, never completed nor aborted)."""

    key: str
    upload_id: str
    initiated: float
    """Epoch seconds."""


def caller_sha256(metadata: Mapping[str, str] | None) -> str | None:
    """The caller's hex SHA-256 (finalize hashes each output once and passes it as metadata), lower-cased;
    None when absent or not a digest. Backends verify the copy against it rather than reading the file twice."""
    value = (metadata or {}).get("sha256", "").lower()
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def complete_parts_ahead(path: Path, numbers: Iterable[int], held: set[int], part_size: int,
                         limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    """A live output's parts to upload while it still grows: each of `numbers` not `held` yet, read whole, at most
    `limit` of them. A part shorter than part_size is not final yet, so it raises ValueError rather than go up."""
    sent = 0
    with open(path, "rb") as source:
        for number in numbers:
            if number in held:
                continue
            if limit is not None and sent >= limit:
                return
            source.seek((number - 1) * part_size)
            data = source.read(part_size)
            if len(data) != part_size:
                raise ValueError(f"part {number} of {path} is not complete yet")
            yield number, data
            sent += 1


def parse_metadata(value: str) -> tuple[int, int, str] | None:
    """(part size, head, composite) of a `sha256-parts` metadata value; None when it is not one."""
    sizes, _, composite = value.partition(":")
    size, _, head = sizes.partition("+")
    if not (size.isdigit() and int(size) > 0 and (not head or head.isdigit()) and len(composite) == 64):
        return None
    return int(size), int(head or 0), composite.lower()


def header_bytes(metadata: Mapping[str, str] | None) -> int:
    """How much longer than the others the first part of a live output is (its `sha256-parts` metadata): a live
    MP4's header, put in front of media whose parts were cut, and sent ahead, while recording. 0 for others."""
    parsed = parse_metadata((metadata or {}).get("sha256-parts", ""))
    return parsed[1] if parsed else 0


def part_span(number: int, total: int, part_size: int, head: int = 0) -> tuple[int, int]:
    """(offset, length) of part `number` (1-based) of a file of `total` bytes whose first part holds `head` bytes
    more than the others."""
    if number == 1:
        return 0, min(total, head + part_size)
    start = head + (number - 1) * part_size
    return start, max(0, min(part_size, total - start))


def count_parts(total: int, part_size: int, head: int = 0) -> int:
    """Parts of a file of `total` bytes (an empty file has one, empty, part)."""
    return 1 + max(0, -(-(total - head - part_size) // part_size))


PARTS_IN_FLIGHT = 4
"""Parts uploaded at once by the part uploaders (S3 multipart, GCS temporaries, at stop part 1 and the tail together;
a whole upload four at a time)."""

IN_FLIGHT_BYTES = 64 * 1024 * 1024
"""At most this many bytes of parts held in memory at once (large STORAGE_PART_SIZE: fewer parts in flight)."""


def parts_in_flight(part_size: int) -> int:
    """PARTS_IN_FLIGHT, fewer when parts are large, so at most IN_FLIGHT_BYTES (and at least one part) are held."""
    return max(1, min(PARTS_IN_FLIGHT, IN_FLIGHT_BYTES // part_size))


def put_parts_concurrently(path: Path, numbers: Iterable[int], put: Callable[[int, int], tuple[dict, int]],
                           pool: ThreadPoolExecutor, limit: int) -> Iterator[tuple[dict, int]]:
    """Each part of the file at `path` sent by put(fd, number) on `pool`, at most `limit` at a time whatever the
    pool's size (each holds a part in memory), and yielded (part entry, length) as it is confirmed, so the caller
    records it and saves its checkpoint at once. On a failure no further part is started, those running are waited
    for and still yielded (a retry need not send them again), and the first error is raised after. Whatever ends
    the iteration (an error here, or in the caller's loop body), no part is left running once the file is closed.
    `put` reads its part with os.pread: threads share no file position."""
    queue = iter(numbers)
    running: set[Future] = set()
    error: BaseException | None = None
    with open(path, "rb") as source:
        fd = source.fileno()

        def start_next() -> None:
            number = next(queue, None)
            if number is not None:
                running.add(pool.submit(put, fd, number))

        try:
            for _ in range(max(1, limit)):
                start_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.discard(future)
                    try:
                        result = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below, once the others are settled
                        error = error or exc
                        continue
                    if error is None:
                        start_next()
                    yield result
        finally:
            for future in running:
                future.cancel()
            wait(running)
    if error is not None:
        raise error


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file; hashlib.file_digest streams it (outputs can be gigabytes)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class ProviderSettings(EnvSettings):
    """Base of each backend's frozen settings: a bad or missing variable is a StorageConfigError naming it."""

    config_error: ClassVar[type[Exception]] = StorageConfigError


class PartedSettings(ProviderSettings):
    """Settings of a backend that uploads large files in parts of STORAGE_PART_SIZE bytes."""

    part_size: int = Field(DEFAULT_PART_SIZE, ge=MIN_PART_SIZE, le=5 * 1024**3, validation_alias="STORAGE_PART_SIZE")
    """At least 5 MiB (S3's and Vercel Blob's smallest part), at most 5 GiB (S3's largest)."""


_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def scrub_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """Remove credential values and URL user-info from text that may end up in logs."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _URL_USERINFO.sub("***@", text)


def check_key(key: str) -> str:
    """Reject keys that could escape a prefix or a root directory."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise PermanentStorageError(f"invalid object key {key!r}")
    return key


class StorageProvider(ABC):
    """A place finished recordings are uploaded to. SDK clients are created lazily."""

    name: str = ""
    stores_metadata: ClassVar[bool] = True
    """False when the backend cannot keep caller metadata (head() then returns none)."""

    @abstractmethod
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
        """Upload a local file, in resumable parts when it is large."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Describe one object; raises ObjectNotFoundError when absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting an absent key is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix."""

    @abstractmethod
    def download_url(self, key: str, expires_in: int) -> str:
        """A URL that downloads the object without credentials until it expires."""

    def upload_bytes(
        self, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Upload a small in-memory object (manifests, thumbnails)."""
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="tapedeck-", suffix=".upload") as tmp:
            tmp.write(data)
            tmp.flush()
            return self.upload_file(key, Path(tmp.name), content_type=content_type, metadata=metadata)

    def abort_upload(self, key: str, checkpoint: UploadCheckpoint) -> None:
        """Give up an interrupted upload for good, so no orphaned parts stay stored; default no-op."""

    def incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Multipart uploads under prefix that were never completed; backends without a listing yield none."""
        return iter(())

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        """Abort one upload incomplete_uploads listed, freeing its parts; an already gone one is fine."""

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    def check(self) -> None:
        """Readiness probe: raise StorageUnavailableError when the backend cannot be reached."""
        for _ in self.list("tapedeck-readyz/"):
            break
