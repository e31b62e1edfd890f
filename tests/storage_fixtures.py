"""What the storage tests share: the files they upload, a fresh key prefix, and a download that works
for every provider. Test modules import the fixtures by name so pytest finds them there."""
from __future__ import annotations

import os
import urllib.request
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from storage_providers import StorageProvider
from storage_providers.local import DOWNLOAD_ROUTE, LocalStorage

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
