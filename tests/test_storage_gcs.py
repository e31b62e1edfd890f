"""The GCS provider against the emulator: resumable sessions that survive a restart, listing, signed URLs."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fault_proxy import FaultProxy
from tests.storage_fixtures import LARGE_SIZE, META, MakeProvider, fetch
from tests.storage_fixtures import large_file, prefix, small_file  # noqa: F401 - fixtures, found by name
from tests.storage_servers import TEST_PART_SIZE, MemoryCheckpoint


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


def test_session_adoption_uses_fields_the_installed_library_still_has(tmp_path: Path) -> None:
    """attach_session sets google-resumable-media fields no public API sets: an upgrade that renames them must fail
    here, not in a worker resuming an upload. The provider never touches google-cloud-storage's private modules."""
    import io

    from google.resumable_media.requests import ResumableUpload

    from storage_providers import gcs, gcs_resumable

    fresh = vars(ResumableUpload("http://127.0.0.1:1/upload", 256 * 1024))
    assert set(gcs_resumable.ADOPTED_FIELDS) <= set(fresh)
    upload = gcs_resumable.attach_session("http://127.0.0.1:1/upload?upload_id=x", 256 * 1024, io.BytesIO(b"abc"), 3,
                                          "video/webm")
    assert (upload.resumable_url, upload.total_bytes, upload.bytes_uploaded, upload.finished) == \
        ("http://127.0.0.1:1/upload?upload_id=x", 3, 0, False)
    for module in (gcs, gcs_resumable):
        source = Path(module.__file__).read_text()
        assert "storage._media" not in source and "client._http" not in source and "client._credentials" not in source


def test_gcs_abort_ends_the_session_and_says_when_it_cannot(make_provider: MakeProvider, large_file: Path,
                                                            prefix: str) -> None:
    from storage_providers.base import StorageUnavailableError
    from tests.services import free_port

    def die_after_first_chunk(sent: int, total: int) -> None:
        raise Interrupted

    provider = make_provider("gcs")
    key, checkpoint = prefix + "alice.webm", MemoryCheckpoint()
    with pytest.raises(Interrupted):
        provider.upload_file(key, large_file, content_type="video/webm", checkpoint=checkpoint,
                             progress=die_after_first_chunk)
    assert checkpoint.state is not None
    provider.abort_upload(key, checkpoint)  # the emulator answers the DELETE (501): nothing to report
    assert checkpoint.state is None

    checkpoint.state = {"provider": "gcs", "session_url": f"http://127.0.0.1:{free_port()}/upload/x", "confirmed": 0}
    with pytest.raises(StorageUnavailableError) as raised:  # nobody listens there
        provider.abort_upload(key, checkpoint)
    assert "abort" in str(raised.value) and checkpoint.state is None
