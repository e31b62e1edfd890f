"""The Vercel Blob provider against its double: the SDK's multipart for large files, 503 as retryable, and
unguessable but deterministic pathnames behind logical keys."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from urllib.error import HTTPError

import pytest

from storage_providers import ObjectNotFoundError, StorageUnavailableError
from tests.storage_fixtures import MakeProvider, fetch
from tests.storage_fixtures import large_file, prefix, small_file  # noqa: F401 - fixtures, found by name
from tests.storage_servers import MemoryCheckpoint
from tests.vercel_blob_double import VercelBlobDouble


def test_vercel_large_upload_uses_sdk_multipart(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                                large_file: Path, prefix: str) -> None:
    provider = make_provider("vercel-blob")
    vercel_blob_store.log.clear()
    provider.upload_file(prefix + "a.webm", large_file, content_type="video/webm", checkpoint=MemoryCheckpoint())
    actions = [entry for _, entry in vercel_blob_store.log]
    assert actions == ["/api/blob/mpu:create:", "/api/blob/mpu:upload:1", "/api/blob/mpu:upload:2",
                       "/api/blob/mpu:upload:3", "/api/blob/mpu:complete:"]


def test_vercel_503_is_retryable(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                 prefix: str, api, app) -> None:
    """A 503 is classed retryable, and finalize does retry it: the output is stored after the failed attempt."""
    from app.services import services
    from tests.media import Recording, encode_webm, slice_timeslice
    from workers.finalize import Finalizer

    provider = make_provider("vercel-blob")
    vercel_blob_store.fail_next.append(503)
    with pytest.raises(StorageUnavailableError):
        provider.head(prefix + "a.webm")

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    with app.app_context():
        svc = services()
        svc.store.stop(api.room, grace_seconds=0, task_id="manual")  # stopped, no task: this test finalizes
        finalizer = Finalizer(store=svc.store, staging=svc.staging, provider=provider, publisher=svc.events,
                              settings=svc.settings, sleep=lambda _s: None)
        with vercel_blob_store.lock:
            vercel_blob_store.log.clear()
            vercel_blob_store.fail_next.append(503)  # the first upload request meets an outage
        assert finalizer.run(recording_id) == "completed"
    assert not vercel_blob_store.fail_next  # the 503 was served
    [output] = api.status(recording_id).get_json()["outputs"]
    stored_objects = [n for n in vercel_blob_store.blobs if n.startswith(f"recordings/{api.room}/{recording_id}/")]
    puts = [entry for method, entry in vercel_blob_store.log if method == "PUT"]
    assert len(puts) == len(stored_objects) + 1, "the upload that met the 503 was not attempted again"
    stored = provider.pathname(output["key"])
    assert vercel_blob_store.blobs[stored].data == fetch(provider, output["key"])
    assert len(vercel_blob_store.blobs[stored].data) == output["bytes"]


# Unguessable, deterministic pathnames (Vercel Blob URLs are public and never expire).

def _stored_under(store: VercelBlobDouble, prefix: str) -> list[str]:
    return sorted(name for name in store.blobs if name.startswith(prefix))


def test_vercel_stores_a_key_under_an_unguessable_pathname(make_provider: MakeProvider,
                                                           vercel_blob_store: VercelBlobDouble,
                                                           small_file: Path, prefix: str) -> None:
    provider = make_provider("vercel-blob")
    key = prefix + "rec_1/alice.webm"
    provider.upload_file(key, small_file, content_type="video/webm")
    [stored] = _stored_under(vercel_blob_store, prefix)
    assert stored != key and key not in vercel_blob_store.blobs
    assert re.fullmatch(re.escape(prefix + "rec_1/alice-") + "[0-9a-f]{32}" + re.escape(".webm"), stored)
    url = provider.download_url(key, 60)
    assert url == vercel_blob_store.blob_url(stored) and "alice.webm" not in url
    with pytest.raises(HTTPError) as guessed:  # the URL anyone could build from the key leads nowhere
        urllib.request.urlopen(vercel_blob_store.blob_url(key), timeout=10)
    assert guessed.value.code == 404


def test_vercel_retry_overwrites_the_same_blob(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                               small_file: Path, tmp_path: Path, prefix: str) -> None:
    key = prefix + "rec_1/alice.webm"
    make_provider("vercel-blob").upload_file(key, small_file, content_type="video/webm")
    retried = tmp_path / "retry.webm"
    retried.write_bytes(b"the retry's bytes")
    provider = make_provider("vercel-blob")  # another process, same configuration
    provider.upload_file(key, retried, content_type="video/webm")
    assert len(_stored_under(vercel_blob_store, prefix)) == 1
    assert fetch(provider, key) == b"the retry's bytes"


def test_vercel_head_list_download_delete_take_logical_keys(make_provider: MakeProvider,
                                                            vercel_blob_store: VercelBlobDouble,
                                                            small_file: Path, prefix: str) -> None:
    provider = make_provider("vercel-blob")
    keys = [prefix + "rec_1/alice.webm", prefix + "rec_1/manifest.json", prefix + "rec_2/bob.webm"]
    for key in keys:
        provider.upload_file(key, small_file, content_type="video/webm")
    vercel_blob_store.blobs[prefix + "rec_1/stranger.webm"] = vercel_blob_store.blobs[
        _stored_under(vercel_blob_store, prefix + "rec_1/alice-")[0]]  # a blob this scheme did not name
    assert provider.head(keys[0]).size == small_file.stat().st_size
    assert sorted(info.key for info in provider.list(prefix)) == sorted(keys)
    assert [info.key for info in provider.list(prefix + "rec_1/al")] == [keys[0]]
    assert fetch(provider, keys[0]) == small_file.read_bytes()
    provider.delete(keys[0])
    with pytest.raises(ObjectNotFoundError):
        provider.head(keys[0])
    assert provider.exists(keys[1])


def test_vercel_suffix_depends_on_the_key_secret(make_provider: MakeProvider, vercel_blob_double: dict[str, str],
                                                 vercel_blob_store: VercelBlobDouble) -> None:
    key = "recordings/room/rec_1/alice.webm"
    from_token = make_provider("vercel-blob").pathname(key)  # type: ignore[attr-defined]
    dedicated = make_provider("vercel-blob", VERCEL_BLOB_KEY_SECRET="a-dedicated-secret")
    assert dedicated.pathname(key) == make_provider(  # type: ignore[attr-defined]
        "vercel-blob", VERCEL_BLOB_KEY_SECRET="a-dedicated-secret").pathname(key)  # type: ignore[attr-defined]
    assert dedicated.pathname(key) != from_token  # type: ignore[attr-defined]
    assert "a-dedicated-secret" not in repr(dedicated.settings)  # type: ignore[attr-defined]
    assert vercel_blob_store.token.rsplit("_", 1)[-1] not in from_token
