"""One contract for every storage provider against real servers, plus configuration, laziness and secrets.
Each backend's own resume story is in test_storage_s3.py, test_storage_gcs.py and test_storage_vercel_blob.py."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from storage_providers import ObjectNotFoundError, StorageError, StorageProvider, StorageUnavailableError
from tests.storage_fixtures import LARGE_SIZE, META, MakeProvider, fetch
from tests.storage_fixtures import large_file, prefix, small_file  # noqa: F401 - fixtures, found by name
from tests.storage_servers import MemoryCheckpoint, free_port


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
