"""The S3 provider against moto: multipart uploads that resume, abort, and survive a stale checkpoint."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from storage_providers import StorageProvider, StorageUnavailableError
from tests.fault_proxy import FaultProxy
from tests.storage_fixtures import LARGE_SIZE, META, MakeProvider, fetch
from tests.storage_fixtures import large_file, prefix, small_file  # noqa: F401 - fixtures, found by name
from tests.storage_servers import BUCKET, TEST_PART_SIZE, MemoryCheckpoint, s3_client


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


def test_s3_uses_the_callers_digest_instead_of_reading_the_file_again(make_provider: MakeProvider, small_file: Path,
                                                                      prefix: str) -> None:
    """Finalize hashes each output once and passes the digest: the provider takes it as given (a second read of
    a gigabyte output would only repeat it; real S3 still verifies it on a single PUT, moto does not)."""
    import hashlib

    provider = make_provider("s3")
    right = hashlib.sha256(small_file.read_bytes()).hexdigest()
    info = provider.upload_file(prefix + "a.webm", small_file, content_type="video/webm", metadata={"sha256": right})
    assert info.metadata["sha256"] == right and fetch(provider, prefix + "a.webm") == small_file.read_bytes()
    given = hashlib.sha256(b"not these bytes").hexdigest()  # only a provider that did not rehash keeps this one
    assert provider.upload_file(prefix + "b.webm", small_file, content_type="video/webm",
                                metadata={"sha256": given}).metadata["sha256"] == given
    assert provider.upload_file(prefix + "c.webm", small_file, content_type="video/webm",
                                metadata={"sha256": "not-hex"}).metadata["sha256"] == right  # not a digest: hashed


def _meeting(client, operations: tuple[str, ...], parties: int) -> list[str]:
    """The first `parties` calls of these operations wait for each other (a barrier; broken if they come one after
    another), so the upload only gets through when they are in flight together. Returns the calls that met."""
    barrier = threading.Barrier(parties, timeout=30)
    met: list[str] = []
    lock = threading.Lock()

    def meet(model, **_) -> None:
        with lock:
            if len(met) >= parties:
                return
            met.append(model.name)
        barrier.wait()

    for operation in operations:
        client.meta.events.register(f"before-call.s3.{operation}", meet)
    return met


def test_s3_parts_go_up_together_and_make_the_same_object(make_provider: MakeProvider, large_file: Path,
                                                          prefix: str) -> None:
    provider = make_provider("s3")
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    met = _meeting(provider.client, ("UploadPart",), 3)  # type: ignore[attr-defined]
    provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)
    assert met == ["UploadPart"] * 3
    assert fetch(provider, key) == large_file.read_bytes()
    assert checkpoint.state is None


def test_s3_resumed_upload_checks_its_parts_beside_the_missing_ones(make_provider: MakeProvider,
                                                                     s3_fault_proxy: FaultProxy, large_file: Path,
                                                                     prefix: str) -> None:
    """ListParts runs while the missing parts go up; a part the checkpoint holds that S3 does not (here: other
    bytes' ETag) is sent again before the complete."""
    provider = _proxied_s3(make_provider, s3_fault_proxy)
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    s3_fault_proxy.fail_part(3)
    with pytest.raises(StorageUnavailableError):
        provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)
    assert sorted(p["PartNumber"] for p in checkpoint.state["parts"]) == [1, 2]
    state = checkpoint.load()
    state["parts"] = [{**p, "ETag": '"00000000000000000000000000000000"'} if p["PartNumber"] == 2 else p
                      for p in state["parts"]]
    checkpoint.save(state)

    met = _meeting(provider.client, ("UploadPart", "ListParts"), 2)  # type: ignore[attr-defined]
    provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)

    assert sorted(met) == ["ListParts", "UploadPart"]
    assert [len(s3_fault_proxy.part_uploads(n)) for n in (1, 2, 3)] == [1, 2, 2], "part 2 not sent again"
    assert fetch(provider, key) == large_file.read_bytes()
    assert checkpoint.state is None


def test_s3_a_failed_part_keeps_the_parts_sent_beside_it(make_provider: MakeProvider, s3_fault_proxy: FaultProxy,
                                                         large_file: Path, prefix: str) -> None:
    """Parts in flight when one fails are recorded before the error is raised, so a retry does not send them
    again; parts not started yet are not sent after the failure (with three parts, a retry sends only the failed
    one)."""
    provider = _proxied_s3(make_provider, s3_fault_proxy)
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    s3_fault_proxy.fail_part(1)
    with pytest.raises(StorageUnavailableError):
        provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)
    assert sorted(p["PartNumber"] for p in checkpoint.state["parts"]) == [2, 3]
    provider.upload_file(key, large_file, content_type="video/webm", metadata=META, checkpoint=checkpoint)
    assert [len(s3_fault_proxy.part_uploads(n)) for n in (1, 2, 3)] == [2, 1, 1]
    assert fetch(provider, key) == large_file.read_bytes()
