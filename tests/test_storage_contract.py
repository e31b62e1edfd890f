"""One contract for every storage provider against real servers, plus each backend's resume story."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import traceback
import urllib.request
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from storage_providers import ObjectNotFoundError, StorageError, StorageProvider, StorageUnavailableError
from storage_providers.local import DOWNLOAD_ROUTE, LocalStorage
from tests.fault_proxy import FaultProxy
from tests.storage_servers import BUCKET, TEST_PART_SIZE, MemoryCheckpoint, free_port, s3_client
from tests.vercel_blob_double import VercelBlobDouble

LARGE_SIZE = 12 * 1024 * 1024
"""Three parts at the 5 MiB test part size; the last one short."""
META = {"recording-id": "rec_abc123", "room": "room123", "participant": "alice", "duration": "12.5"}

MakeProvider = Callable[..., StorageProvider]


@pytest.fixture(scope="session")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "large.webm"
    path.write_bytes(os.urandom(LARGE_SIZE))
    return path


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.webm"
    path.write_bytes(os.urandom(100 * 1024))
    return path


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix: the servers live for the whole session."""
    return f"recordings/room-{uuid.uuid4().hex[:8]}/"


def fetch(provider: StorageProvider, key: str) -> bytes:
    """Download through download_url with plain HTTP (local: through its signature check)."""
    url = provider.download_url(key, 300)
    if isinstance(provider, LocalStorage):
        split = urlsplit(url)
        assert split.path == DOWNLOAD_ROUTE + key
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        path = provider.verify_download(unquote(split.path.removeprefix(DOWNLOAD_ROUTE)),
                                        int(query["expires"]), query["sig"])
        return path.read_bytes()
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


# The contract, once per provider -------------------------------------------------------


def test_small_upload_round_trips_with_metadata(storage_provider: StorageProvider, small_file: Path,
                                                prefix: str) -> None:
    key = prefix + "alice.webm"
    seen: list[tuple[int, int]] = []
    info = storage_provider.upload_file(key, small_file, content_type="video/webm", metadata=META,
                                        progress=lambda sent, total: seen.append((sent, total)))
    size = small_file.stat().st_size
    assert (info.key, info.size) == (key, size)
    assert seen[-1] == (size, size)
    assert fetch(storage_provider, key) == small_file.read_bytes()
    head = storage_provider.head(key)
    assert (head.key, head.size, head.content_type) == (key, size, "video/webm")
    if storage_provider.stores_metadata:
        assert META.items() <= dict(head.metadata).items()
    if storage_provider.name in ("s3", "gcs"):
        assert head.metadata["sha256"] == hashlib.sha256(small_file.read_bytes()).hexdigest()


def test_large_upload_goes_in_parts_and_round_trips(storage_provider: StorageProvider, large_file: Path,
                                                    prefix: str) -> None:
    key = prefix + "alice-large.webm"
    checkpoint = MemoryCheckpoint()
    seen: list[tuple[int, int]] = []
    info = storage_provider.upload_file(key, large_file, content_type="video/webm", metadata=META,
                                        progress=lambda sent, total: seen.append((sent, total)),
                                        checkpoint=checkpoint)
    assert info.size == LARGE_SIZE
    assert len(seen) >= 3 and seen[-1] == (LARGE_SIZE, LARGE_SIZE)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert checkpoint.state is None, "a finished upload leaves nothing to resume"
    if storage_provider.name in ("s3", "gcs"):
        assert len(checkpoint.saves) >= 3, "the checkpoint is saved as parts complete"
    assert fetch(storage_provider, key) == large_file.read_bytes()
    assert storage_provider.head(key).size == LARGE_SIZE


def test_exists_list_and_delete(storage_provider: StorageProvider, small_file: Path, prefix: str) -> None:
    keys = [prefix + "p1/alice.webm", prefix + "p1/bob.webm", prefix + "p10/carol.webm"]
    for key in keys:
        storage_provider.upload_file(key, small_file, content_type="video/webm")
    storage_provider.upload_bytes(prefix + "manifest.json", b"{}", content_type="application/json")
    size = small_file.stat().st_size

    assert {(o.key, o.size) for o in storage_provider.list(prefix + "p1/")} == {(k, size) for k in keys[:2]}
    assert {o.key for o in storage_provider.list(prefix + "p1")} == set(keys), "a prefix, not a folder"
    assert len(list(storage_provider.list(prefix))) == 4
    assert list(storage_provider.list(prefix + "nothing-here/")) == []

    assert storage_provider.exists(keys[0])
    storage_provider.delete(keys[0])
    assert not storage_provider.exists(keys[0])
    storage_provider.delete(keys[0])  # absent: fine
    assert {o.key for o in storage_provider.list(prefix + "p1/")} == {keys[1]}


def test_head_of_missing_key_raises_not_found(storage_provider: StorageProvider, prefix: str) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        storage_provider.head(prefix + "missing.webm")
    assert isinstance(caught.value, FileNotFoundError)
    assert not storage_provider.exists(prefix + "missing.webm")


@pytest.mark.parametrize("key", ["../escape.webm", "/abs.webm", "a//b.webm", ""])
def test_unsafe_keys_are_rejected(storage_provider: StorageProvider, small_file: Path, key: str) -> None:
    with pytest.raises(StorageError):
        storage_provider.upload_file(key, small_file, content_type="video/webm")


# S3 ------------------------------------------------------------------------------------


def _proxied_s3(make_provider: MakeProvider, proxy: FaultProxy) -> StorageProvider:
    # One attempt per request, so the injected failure reaches the provider instead of
    # being absorbed by botocore's own retries.
    return make_provider("s3", S3_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="1")


@pytest.mark.parametrize("mode", ["status", "drop"])
def test_s3_retry_resumes_multipart_from_checkpoint(make_provider: MakeProvider, s3_fault_proxy: FaultProxy,
                                                    large_file: Path, prefix: str, mode: str) -> None:
    provider = _proxied_s3(make_provider, s3_fault_proxy)
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    s3_fault_proxy.fail_part(3, mode=mode)  # type: ignore[arg-type]

    with pytest.raises(StorageUnavailableError):
        provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)
    assert checkpoint.state is not None and len(checkpoint.state["parts"]) == 2

    seen: list[tuple[int, int]] = []
    provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint,
                         progress=lambda sent, total: seen.append((sent, total)))

    assert [len(s3_fault_proxy.part_uploads(n)) for n in (1, 2, 3)] == [1, 1, 2], "parts 1-2 not re-sent"
    assert any(r.method == "GET" and "uploadId" in r.query for r in s3_fault_proxy.log), "verified by ListParts"
    assert seen[0] == (2 * TEST_PART_SIZE, LARGE_SIZE) and seen[-1] == (LARGE_SIZE, LARGE_SIZE)
    assert checkpoint.state is None
    assert fetch(provider, key) == large_file.read_bytes()
    assert provider.head(key).metadata["room"] == "room123"


def test_s3_abort_leaves_no_incomplete_upload(make_provider: MakeProvider, s3_fault_proxy: FaultProxy,
                                              moto_server: dict[str, str], large_file: Path, prefix: str) -> None:
    provider = _proxied_s3(make_provider, s3_fault_proxy)
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    s3_fault_proxy.fail_part(2)
    with pytest.raises(StorageUnavailableError):
        provider.upload_file(key, large_file, content_type="video/webm", checkpoint=checkpoint)
    client = s3_client(moto_server)
    pending = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    assert [u["UploadId"] for u in pending] == [checkpoint.state["upload_id"]]

    provider.abort_upload(key, checkpoint)

    assert client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []
    assert checkpoint.state is None
    assert not provider.exists(key)
    provider.abort_upload(key, checkpoint)  # nothing left: fine


def test_s3_stale_checkpoint_restarts_cleanly(make_provider: MakeProvider, moto_server: dict[str, str],
                                              large_file: Path, prefix: str) -> None:
    provider = make_provider("s3")
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    client = s3_client(moto_server)
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
    checkpoint.save({"provider": "s3", "bucket": BUCKET, "key": key, "upload_id": upload_id,
                     "size": LARGE_SIZE, "part_size": TEST_PART_SIZE, "parts": [],
                     "sha256": hashlib.sha256(large_file.read_bytes()).hexdigest()})
    provider.upload_file(key, large_file, content_type="video/webm", checkpoint=checkpoint)
    assert fetch(provider, key) == large_file.read_bytes()


def test_s3_download_url_is_presigned(make_provider: MakeProvider, small_file: Path, prefix: str) -> None:
    provider = make_provider("s3")
    provider.upload_file(prefix + "a.webm", small_file, content_type="video/webm")
    url = provider.download_url(prefix + "a.webm", 600)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query
    assert fetch(provider, prefix + "a.webm") == small_file.read_bytes()


def test_s3_prefix_is_applied_and_hidden(make_provider: MakeProvider, moto_server: dict[str, str],
                                         small_file: Path, prefix: str) -> None:
    provider = make_provider("s3", S3_PREFIX="tenant-a/")
    provider.upload_file(prefix + "a.webm", small_file, content_type="video/webm")
    stored = s3_client(moto_server).list_objects_v2(Bucket=BUCKET, Prefix="tenant-a/" + prefix)
    assert [o["Key"] for o in stored["Contents"]] == ["tenant-a/" + prefix + "a.webm"]
    assert [o.key for o in provider.list(prefix)] == [prefix + "a.webm"]


# GCS -----------------------------------------------------------------------------------


class Interrupted(Exception):
    """Stands in for a worker dying between two chunks."""


def test_gcs_resumable_upload_resumes_from_checkpoint(make_provider: MakeProvider, gcs_emulator: dict[str, str],
                                                      large_file: Path, prefix: str) -> None:
    proxy = FaultProxy(upstream_port=urlsplit(gcs_emulator["STORAGE_EMULATOR_HOST"]).port or 80).start()
    try:
        provider = make_provider("gcs", STORAGE_EMULATOR_HOST=proxy.url)
        key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()

        def die_after_first_chunk(sent: int, total: int) -> None:
            raise Interrupted

        with pytest.raises(Interrupted):
            provider.upload_file(key, large_file, content_type="video/webm", metadata=META,
                                 progress=die_after_first_chunk, checkpoint=checkpoint)
        assert checkpoint.state is not None and checkpoint.state["confirmed"] == TEST_PART_SIZE
        session_url = checkpoint.state["session_url"]

        seen: list[tuple[int, int]] = []
        provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint,
                             progress=lambda sent, total: seen.append((sent, total)))

        chunks = [r.headers.get("content-range", "") for r in proxy.log
                  if r.method == "PUT" and r.body_size > 0]
        starts = (0, TEST_PART_SIZE, 2 * TEST_PART_SIZE, LARGE_SIZE)
        assert chunks == [f"bytes {a}-{b - 1}/{LARGE_SIZE}" for a, b in zip(starts, starts[1:])], "none sent twice"
        assert sum(1 for r in proxy.log if r.method == "POST" and "uploadType" in r.query) == 1, "one session"
        assert session_url.startswith(proxy.url)
        assert seen[0] == (TEST_PART_SIZE, LARGE_SIZE) and seen[-1] == (LARGE_SIZE, LARGE_SIZE)
        assert checkpoint.state is None
        head = provider.head(key)
        assert head.size == LARGE_SIZE and META.items() <= dict(head.metadata).items()
        assert fetch(provider, key) == large_file.read_bytes()
    finally:
        proxy.stop()


def test_gcs_retry_after_finishing_but_before_clearing_succeeds(make_provider: MakeProvider, large_file: Path,
                                                                prefix: str) -> None:
    provider = make_provider("gcs")
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    provider.upload_file(key, large_file, content_type="video/webm", checkpoint=checkpoint)
    checkpoint.state = checkpoint.saves[-1]  # as if the worker died right before clear()
    assert checkpoint.state["confirmed"] == LARGE_SIZE
    provider.upload_file(key, large_file, content_type="video/webm", checkpoint=checkpoint)
    assert checkpoint.state is None
    assert fetch(provider, key) == large_file.read_bytes()


def test_gcs_lists_nested_keys_and_deletes(make_provider: MakeProvider, small_file: Path, prefix: str) -> None:
    provider = make_provider("gcs")
    keys = [prefix + "alice.webm", prefix + "deep/er/bob.webm", prefix + "manifest.json"]
    for key in keys:
        provider.upload_file(key, small_file, content_type="video/webm", metadata={"room": "room123"})
    listed = {o.key: o for o in provider.list(prefix)}
    assert set(listed) == set(keys)
    assert listed[keys[1]].metadata["room"] == "room123"
    for key in keys:
        provider.delete(key)
    assert list(provider.list(prefix)) == []


def test_gcs_signed_url_and_emulator_fallback(make_provider: MakeProvider, small_file: Path, prefix: str) -> None:
    signed = make_provider("gcs")
    signed.upload_file(prefix + "a.webm", small_file, content_type="video/webm")
    assert "X-Goog-Signature=" in signed.download_url(prefix + "a.webm", 60)
    unsigned = make_provider("gcs", GCS_CREDENTIALS_FILE="")
    assert "alt=media" in unsigned.download_url(prefix + "a.webm", 60)
    assert fetch(unsigned, prefix + "a.webm") == small_file.read_bytes()


# Vercel Blob ---------------------------------------------------------------------------


def test_vercel_large_upload_uses_sdk_multipart(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                                large_file: Path, prefix: str) -> None:
    provider = make_provider("vercel-blob")
    vercel_blob_store.log.clear()
    provider.upload_file(prefix + "a.webm", large_file, content_type="video/webm", checkpoint=MemoryCheckpoint())
    actions = [entry for _, entry in vercel_blob_store.log]
    assert actions == ["/api/blob/mpu:create:", "/api/blob/mpu:upload:1", "/api/blob/mpu:upload:2",
                       "/api/blob/mpu:upload:3", "/api/blob/mpu:complete:"]


def test_vercel_503_is_retryable(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                 prefix: str) -> None:
    provider = make_provider("vercel-blob")
    vercel_blob_store.fail_next.append(503)
    with pytest.raises(StorageUnavailableError):
        provider.head(prefix + "a.webm")


# Configuration, laziness and secrets ---------------------------------------------------


@pytest.mark.parametrize(("name", "variable"), [("s3", "S3_BUCKET"), ("gcs", "GCS_BUCKET"),
                                                 ("vercel-blob", "BLOB_READ_WRITE_TOKEN")])
def test_missing_settings_fail_naming_the_variable(name: str, variable: str) -> None:
    from storage_providers import create_provider

    with pytest.raises(StorageError, match=variable):
        create_provider(name, env={})


@pytest.mark.parametrize("value", ["1024", "lots"])
def test_part_size_is_validated(value: str) -> None:
    from storage_providers import create_provider

    with pytest.raises(StorageError, match="STORAGE_PART_SIZE"):
        create_provider("s3", env={"S3_BUCKET": "b", "STORAGE_PART_SIZE": value})


def test_importing_and_building_providers_neither_imports_sdks_nor_connects() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    script = f"""
import sys
from storage_providers import create_provider
create_provider("s3", env={{"S3_BUCKET": "b", "S3_ENDPOINT_URL": "{dead}"}})
create_provider("gcs", env={{"GCS_BUCKET": "b", "STORAGE_EMULATOR_HOST": "{dead}"}})
create_provider("vercel-blob", env={{"BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_s_x", "VERCEL_BLOB_API_URL": "{dead}"}})
loaded = [m for m in ("boto3", "botocore", "google.cloud.storage", "vercel.blob") if m in sys.modules]
assert not loaded, loaded
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert done.returncode == 0, done.stderr


def _full_error_text(error: BaseException) -> str:
    return repr(error) + "".join(traceback.format_exception(error))


def test_credentials_never_appear_in_errors(make_provider: MakeProvider, vercel_blob_double: dict[str, str]) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET"
    dead = f"127.0.0.1:{free_port()}"
    s3 = make_provider("s3", S3_ENDPOINT_URL=f"http://AKIDEXAMPLE:{secret}@{dead}",
                       AWS_SECRET_ACCESS_KEY=secret, AWS_MAX_ATTEMPTS="1")
    assert secret not in repr(s3.settings)  # type: ignore[attr-defined]
    with pytest.raises(StorageUnavailableError) as unreachable:
        s3.head("a.webm")
    assert secret not in _full_error_text(unreachable.value)

    # The double echoes a rejected token in its error message, as a leaky upstream might.
    wrong_token = "vercel_blob_rw_teststore_" + secret
    vercel = make_provider("vercel-blob", BLOB_READ_WRITE_TOKEN=wrong_token)
    assert secret not in repr(vercel.settings)  # type: ignore[attr-defined]
    with pytest.raises(StorageError) as denied:
        vercel.head("a.webm")
    assert "Access denied" in str(denied.value) and secret not in _full_error_text(denied.value)
