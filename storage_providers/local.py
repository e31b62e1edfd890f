"""Local-disk backend: objects are files under LOCAL_STORAGE_DIR, served by a signed app route."""
from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import ClassVar, Iterator, Mapping

from pydantic import Field, field_validator
from urllib.parse import quote, urlencode

from storage_providers.base import (
    ChecksumMismatchError,
    ObjectInfo,
    ObjectNotFoundError,
    PermanentStorageError,
    ProgressCallback,
    ProviderSettings,
    StorageError,
    StorageProvider,
    UploadCheckpoint,
    caller_sha256,
    check_key,
    parse_metadata,
)

COPY_BLOCK = 4 * 1024 * 1024
META_DIR = ".tapedeck-meta"
"""Sidecar folder for content type and metadata; hidden from list()."""

DOWNLOAD_ROUTE = "/files/"
"""The app route (app/routes/files.py) that serves signed local downloads."""
DEFAULT_PUBLIC_BASE_URL = "http://localhost:8000"
"""Where `make run` serves the web process; set PUBLIC_BASE_URL for anything else."""


class LocalSettings(ProviderSettings):
    """PUBLIC_BASE_URL is the one base of download links, for every process: never a process's own PORT
    (under honcho the worker's PORT is not the web's, so links minted from it point where nothing listens)."""

    secret_variables: ClassVar[frozenset[str]] = frozenset({"LOCAL_URL_SECRET"})

    root: Path = Field(Path("./var/recordings"), validation_alias="LOCAL_STORAGE_DIR", validate_default=True)
    public_base_url: str = Field(DEFAULT_PUBLIC_BASE_URL, validation_alias="PUBLIC_BASE_URL")
    url_secret: str | None = Field(None, repr=False, validation_alias="LOCAL_URL_SECRET")

    @field_validator("root", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


class LocalStorage(StorageProvider):
    """Files on disk. Writes go to a temp file and are renamed, so readers never see half an object."""

    name = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.root = settings.root

    def path_for(self, key: str) -> Path:
        check_key(key)
        if key.split("/", 1)[0] == META_DIR:
            raise PermanentStorageError(f"invalid object key {key!r}")
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

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
        target = self.path_for(key)
        total = os.path.getsize(path)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        sent = 0
        expected = caller_sha256(metadata)
        digest = hashlib.sha256() if expected else None
        parts = _PartHasher.expecting(metadata)
        try:
            linked = parts is not None and _link(path, tmp)
            if linked:
                if progress:  # stored in place: the very bytes the part checksums were computed from, no copy
                    progress(total, total)
            else:
                with open(path, "rb") as src, _create(tmp) as dst:
                    while block := src.read(COPY_BLOCK):
                        dst.write(block)
                        if digest is not None:
                            digest.update(block)
                        if parts is not None:
                            parts.update(block)
                        sent += len(block)
                        if progress:
                            progress(sent, total)
                    dst.flush()
                    os.fsync(dst.fileno())
            if digest is not None and digest.hexdigest() != expected:
                raise ChecksumMismatchError(f"local copy of {key!r} has sha256 {digest.hexdigest()}, "
                                            f"not the {expected} it was sent with")
            if parts is not None and not linked and parts.composite() != parts.expected:
                raise ChecksumMismatchError(f"local copy of {key!r} has part checksum {parts.composite()}, "
                                            f"not the {parts.expected} it was sent with")
            meta = {"contentType": content_type, "metadata": dict(metadata or {})}
            meta_path = self._meta_path(key)
            meta_tmp = meta_path.with_name(meta_path.name + ".part")
            with _create(meta_tmp) as handle:
                handle.write(json.dumps(meta).encode())
            os.replace(meta_tmp, meta_path)
            os.replace(tmp, target)
        except OSError as exc:
            raise PermanentStorageError(f"local write of {key!r} failed: {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        if progress and total == 0:
            progress(0, 0)
        return ObjectInfo(key=key, size=total, content_type=content_type, metadata=dict(metadata or {}))

    def head(self, key: str) -> ObjectInfo:
        target = self.path_for(key)
        if not target.is_file():
            raise ObjectNotFoundError(key)
        meta: dict = {}
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            pass
        return ObjectInfo(
            key=key,
            size=target.stat().st_size,
            content_type=meta.get("contentType"),
            metadata=meta.get("metadata", {}),
        )

    def delete(self, key: str) -> None:
        """Also removes the folders the key leaves empty, so deleting recordings leaves no empty folder per
        room and recording behind (under the files and under the sidecar folder)."""
        target, meta = self.path_for(key), self._meta_path(key)
        target.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        _prune_empty(target.parent, self.root)
        _prune_empty(meta.parent, self.root / META_DIR)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != META_DIR)
            for filename in sorted(filenames):
                if filename.endswith(".part"):
                    continue
                key = Path(dirpath, filename).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield self.head(key)

    def check(self) -> None:
        from storage_providers.base import StorageUnavailableError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailableError(f"local storage root is not usable: {exc.strerror}") from exc

    # Signed download URLs -------------------------------------------------

    def _secret(self) -> bytes:
        """LOCAL_URL_SECRET, else a random secret kept beside the files (shared by every process)."""
        if self.settings.url_secret:
            return self.settings.url_secret.encode()
        secret_path = self.root / META_DIR / "url-secret"
        if not secret_path.exists():
            secret_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = secret_path.with_name(f"url-secret.{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_hex(32))
            try:
                os.link(tmp, secret_path)  # first writer wins; others read its value
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return secret_path.read_text().strip().encode()

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self._secret(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def download_url(self, key: str, expires_in: int) -> str:
        self.path_for(key)
        expires = int(time.time()) + int(expires_in)
        query = urlencode({"expires": expires, "sig": self.signature(key, expires)})
        return f"{self.settings.public_base_url}{DOWNLOAD_ROUTE}{quote(key)}?{query}"

    def verify_download(self, key: str, expires: int, signature: str) -> Path:
        """The file behind a signed URL; raises ObjectNotFoundError for a bad, expired or absent one."""
        if expires < time.time() or not hmac.compare_digest(self.signature(key, expires), signature):
            raise ObjectNotFoundError(key)
        target = self.path_for(key)
        if not target.is_file():
            raise ObjectNotFoundError(key)
        return target


class _PartHasher:
    """Checks a copy against the caller's `sha256-parts` metadata (`<partSize>[+<head>]:<composite hex>`, live
    outputs: workers/live/checksum.py): SHA-256 per part of partSize bytes (the first `head` bytes longer), then
    SHA-256 over the parts' digests."""

    def __init__(self, part_size: int, expected: str, head: int = 0) -> None:
        self.part_size, self.expected = part_size, expected
        self.digests: list[bytes] = []
        self.current, self.filled, self.limit = hashlib.sha256(), 0, part_size + head

    @classmethod
    def expecting(cls, metadata: Mapping[str, str] | None) -> _PartHasher | None:
        parsed = parse_metadata((metadata or {}).get("sha256-parts", ""))
        if parsed is None:
            return None
        size, head, composite = parsed
        return cls(size, composite, head)

    def update(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            take = min(len(view), self.limit - self.filled)
            self.current.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.limit:
                self.digests.append(self.current.digest())
                self.current, self.filled, self.limit = hashlib.sha256(), 0, self.part_size

    def composite(self) -> str:
        tail = [self.current.digest()] if self.filled or not self.digests else []
        return hashlib.sha256(b"".join(self.digests + tail)).hexdigest()


def _link(path: Path, tmp: Path) -> bool:
    """Hard-links a closed output next to its key (renamed into place after), when staging and storage share a
    filesystem; False (copy instead) when they do not, or the filesystem has no hard links."""
    for attempt in (1, 2):
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, tmp)
            return True
        except FileNotFoundError:
            if attempt == 2 or not os.path.exists(path):
                raise
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                return False
            raise
    return False


def _create(path: Path):
    """Opens a new file for writing, making its folders; once more if a delete pruned them meanwhile."""
    for attempt in (1, 2):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(path, "wb")
        except FileNotFoundError:
            if attempt == 2:
                raise


def _prune_empty(folder: Path, stop: Path) -> None:
    """Removes folder and its parents while they are empty, up to (not including) stop."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:   # not empty (or already gone): parents above it are not empty either
            return
        folder = folder.parent


def create(env: Mapping[str, str]) -> LocalStorage:
    return LocalStorage(LocalSettings.from_env(env))


__all__ = ["LocalStorage", "LocalSettings", "create"]
