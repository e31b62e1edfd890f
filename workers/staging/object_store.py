"""Chunk staging in the storage provider's bucket (STAGING_BACKEND=object-store), so web and worker nodes share
nothing but Redis and the object store: the web node PUTs each chunk under staging/ before answering 202, and any
worker finalizes any recording by fetching its chunks back in sequence order.

Objects: staging/<recordingId>/<participantId>/<type>/<sequence>-<sha256>.chunk, plus staging/<recordingId>/
recording.json (the descriptor rebuild reads). Content names make a retried PUT rewrite the same object, as on disk.

Finalize needs files (the muxer seeks inside a stream's chunks), so the worker fetches one participant's chunks onto
its own disk through a small pool of threads, PREFETCH requests in flight, each streamed to its file in pieces: a
request's latency overlaps the others' and memory never holds more than a few pieces. The copies are dropped once
that participant is muxed."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterator

from storage_providers import StorageError, StorageProvider
from storage_providers.base import ObjectNotFoundError
from workers.errors import ConfigurationError, Unavailable
from workers.ids import ID_PATTERN, check_id, check_stream_type
from workers.staging.base import CHUNK_NAME, RECORDING_FILE, FoundChunk, StagedChunk, Staging, Wanted

log = logging.getLogger(__name__)

PREFIX = "staging/"
PREFETCH = 8
"""Chunk GETs in flight per stream during finalize: enough to hide a store's per-request latency (bench/
capacity_bench.py), few enough that a worker's memory holds at most PREFETCH pieces of COPY_PIECE bytes."""
COPY_PIECE = 1024 * 1024
SUPPORTED = ("s3", "gcs")


class ObjectStoreStaging(Staging):
    """Staging in the configured S3-compatible or GCS bucket; `scratch` is this process's disk for finalize."""

    def __init__(self, provider: StorageProvider, scratch: Path, prefetch: int = PREFETCH) -> None:
        if provider.name not in SUPPORTED:
            raise ConfigurationError(f"STAGING_BACKEND=object-store needs STORAGE_PROVIDER s3 or gcs, "
                                     f"not {provider.name!r}")
        self.provider = provider
        self.objects = _S3Objects(provider) if provider.name == "s3" else _GcsObjects(provider)
        self.scratch = Path(scratch)
        self.prefetch = max(1, prefetch)

    # Keys and local paths -------------------------------------------------

    def recording_prefix(self, recording_id: str) -> str:
        return f"{PREFIX}{check_id(recording_id, 'recordingId')}/"

    def chunk_key(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> str:
        if not CHUNK_NAME.fullmatch(name):
            raise ValueError(f"not a staged chunk name: {name!r}")
        return (f"{self.recording_prefix(recording_id)}{check_id(participant_id, 'participantId')}/"
                f"{check_stream_type(stream_type)}/{name}")

    def output_dir(self, recording_id: str) -> Path:
        return self.scratch / check_id(recording_id, "recordingId") / "_outputs"

    def _fetch_dir(self, recording_id: str, participant_id: str) -> Path:
        return self.scratch / check_id(recording_id, "recordingId") / "_fetched" / check_id(participant_id, "participantId")

    # The interface ----------------------------------------------------------

    def check_space(self) -> None:
        """A bucket has no floor to check; an unreachable one answers 503 at stage()."""

    def stage(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, data: bytes,
              digest: str | None = None) -> StagedChunk:
        digest = digest or hashlib.sha256(data).hexdigest()
        name = self.chunk_name(sequence, digest)
        key = self.chunk_key(recording_id, participant_id, stream_type, name)
        try:
            self.objects.put(key, data, digest)
        except StorageError as exc:  # unreachable, throttled or refused: the client retries, nothing acknowledged
            log.warning("staging %s failed: %s", key, exc)
            raise Unavailable("chunk staging is unavailable (object store); retry later") from None
        return StagedChunk(path=Path(key), digest=digest, size=len(data))

    def open_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> BinaryIO:
        return self.objects.open(self.chunk_key(recording_id, participant_id, stream_type, name))

    def delete_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> None:
        """Best effort: intake drops a rejected chunk here, and a bucket hiccup must not turn its 409 into a 500;
        an object left behind is harmless (the index never names it) and goes with the recording's prefix."""
        key = self.chunk_key(recording_id, participant_id, stream_type, name)
        try:
            self.provider.delete(key)
        except StorageError as exc:
            log.warning("could not delete %s (left for the recording's cleanup): %s", key, exc)

    def local_chunks(self, recording_id: str, participant_id: str, stream_type: str, wanted: Wanted) -> list[tuple[int, Path | None]]:
        """Fetch the stream's chunks to this worker's disk, PREFETCH at a time, in sequence order. A chunk that is
        gone or of another size is None (reported missing); an unreachable store raises (the task retries)."""
        directory = self._fetch_dir(recording_id, participant_id) / check_stream_type(stream_type)
        directory.mkdir(parents=True, exist_ok=True)

        def fetch(item: tuple[int, str, int]) -> tuple[int, Path | None]:
            sequence, name, size = item
            target = directory / name
            if _size(target) == size:
                return sequence, target  # fetched by an earlier attempt of this finalize
            try:
                with self.open_chunk(recording_id, participant_id, stream_type, name) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, COPY_PIECE)
            except ObjectNotFoundError:
                target.unlink(missing_ok=True)
                return sequence, None
            return sequence, target if _size(target) == size else None

        with ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="staging-fetch") as pool:
            return list(pool.map(fetch, wanted))

    def release(self, recording_id: str, participant_id: str) -> None:
        shutil.rmtree(self._fetch_dir(recording_id, participant_id), ignore_errors=True)

    def scratch_recordings(self) -> list[str]:
        try:
            entries = list(self.scratch.iterdir())
        except FileNotFoundError:
            return []
        return sorted(entry.name for entry in entries if entry.is_dir() and ID_PATTERN.fullmatch(entry.name))

    def finished(self, recording_id: str) -> None:
        shutil.rmtree(self.scratch / check_id(recording_id, "recordingId"), ignore_errors=True)

    def scan(self, recording_id: str) -> Iterator[FoundChunk]:
        prefix = self.recording_prefix(recording_id)
        found = []
        for info in self.provider.list(prefix):
            parts = info.key[len(prefix):].split("/")
            if len(parts) != 3:
                continue
            participant_id, stream_type, name = parts
            match = CHUNK_NAME.fullmatch(name)
            if match and stream_type in ("video", "audio") and not participant_id.startswith("_"):
                found.append(FoundChunk(participant_id, stream_type, int(match.group(1)), PurePosixPath(info.key)))
        yield from sorted(found, key=lambda f: (f.participant_id, f.stream_type, f.sequence, f.name))

    def remember(self, recording_id: str, facts: dict) -> None:
        """Best effort, as on disk: a bucket that cannot take the descriptor refuses the chunks too (503)."""
        key = self.recording_prefix(recording_id) + RECORDING_FILE
        data = json.dumps(facts).encode()
        try:
            self.objects.put(key, data, hashlib.sha256(data).hexdigest(), content_type="application/json")
        except StorageError as exc:
            log.warning("could not write %s: %s", key, exc)

    def recall(self, recording_id: str) -> dict | None:
        try:
            with self.objects.open(self.recording_prefix(recording_id) + RECORDING_FILE) as handle:
                return json.loads(handle.read(1024 * 1024))
        except (StorageError, ValueError):
            return None

    def remove_recording(self, recording_id: str) -> None:
        self.objects.delete_many([info.key for info in self.provider.list(self.recording_prefix(recording_id))])
        self.finished(recording_id)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class _S3Objects:
    """Single PUTs checked by the store (ChecksumSHA256), streamed GETs, batched deletes."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def put(self, key: str, data: bytes, digest: str, content_type: str = "application/octet-stream") -> None:
        p = self.provider
        with p.translating("stage", key):
            p.client.put_object(Bucket=p.settings.bucket, Key=p.prefixed_key(key), Body=data, ContentType=content_type,
                                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode())

    def open(self, key: str) -> BinaryIO:
        p = self.provider
        with p.translating("read", key):
            return _Translated(p.client.get_object(Bucket=p.settings.bucket, Key=p.prefixed_key(key))["Body"], p, key)

    def delete_many(self, keys: list[str]) -> None:
        p = self.provider
        for start in range(0, len(keys), 1000):
            batch = [{"Key": p.prefixed_key(key)} for key in keys[start:start + 1000]]
            with p.translating("delete", PREFIX):
                p.client.delete_objects(Bucket=p.settings.bucket, Delete={"Objects": batch, "Quiet": True})


class _GcsObjects:
    """Single uploads checked by CRC32C, streamed reads (BlobReader), deletes one by one."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def _blob(self, key: str) -> Any:
        return self.provider.client.bucket(self.provider.settings.bucket).blob(key)

    def put(self, key: str, data: bytes, digest: str, content_type: str = "application/octet-stream") -> None:
        from storage_providers.gcs_resumable import sdk_retry

        with self.provider.translating("stage", key):
            self._blob(key).upload_from_string(data, content_type=content_type, checksum="crc32c", retry=sdk_retry())

    def open(self, key: str) -> BinaryIO:
        from storage_providers.gcs_resumable import sdk_retry

        with self.provider.translating("read", key):
            blob = self.provider.client.bucket(self.provider.settings.bucket).get_blob(key, retry=sdk_retry())
            if blob is None:
                raise ObjectNotFoundError(key)
            return _Translated(blob.open("rb", chunk_size=COPY_PIECE), self.provider, key)

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.provider.delete(key)


class _Translated:
    """A streamed body whose SDK errors (raised lazily, on read: a dropped connection) become storage errors."""

    def __init__(self, reader: Any, provider: Any, key: str) -> None:
        self.reader, self.provider, self.key = reader, provider, key
        self.whole_read_is_none = provider.name == "s3"  # botocore's StreamingBody reads all with amt=None

    def read(self, size: int = -1) -> bytes:
        with self.provider.translating("read", self.key):
            if size is None or size < 0:
                return self.reader.read() if self.whole_read_is_none else self.reader.read(-1)
            return self.reader.read(size)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "_Translated":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
