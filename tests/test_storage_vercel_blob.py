"""The Vercel Blob provider against its double: the SDK's multipart for large files, 503 as retryable."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage_providers import StorageUnavailableError
from tests.storage_fixtures import MakeProvider
from tests.storage_fixtures import large_file, prefix  # noqa: F401 - fixtures, found by name
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
                                 prefix: str) -> None:
    provider = make_provider("vercel-blob")
    vercel_blob_store.fail_next.append(503)
    with pytest.raises(StorageUnavailableError):
        provider.head(prefix + "a.webm")
