"""The local provider verifies the manifest's checksum as it copies: an output whose bytes are not the ones
the checksum names is refused (ChecksumMismatchError) and nothing is stored, not even a partial file."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage_providers import ObjectNotFoundError
from storage_providers.base import ChecksumMismatchError
from tests.storage_fixtures import META, MakeProvider, fetch
from tests.storage_fixtures import prefix, small_file  # noqa: F401 - fixtures, found by name


def test_a_matching_checksum_is_stored_and_a_wrong_one_stores_nothing(make_provider: MakeProvider, small_file: Path,
                                                                       prefix: str) -> None:
    provider = make_provider("local")
    right = hashlib.sha256(small_file.read_bytes()).hexdigest()
    info = provider.upload_file(prefix + "a.webm", small_file, content_type="video/webm",
                                metadata={**META, "sha256": right.upper()})
    assert info.size == small_file.stat().st_size and fetch(provider, prefix + "a.webm") == small_file.read_bytes()

    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        provider.upload_file(prefix + "b.webm", small_file, content_type="video/webm", metadata={"sha256": wrong})
    with pytest.raises(ObjectNotFoundError):
        provider.head(prefix + "b.webm")
    folder = provider.path_for(prefix + "b.webm").parent
    assert sorted(p.name for p in folder.iterdir()) == ["a.webm"]  # no .part left behind


def test_no_or_no_hex_checksum_means_nothing_to_verify(make_provider: MakeProvider, small_file: Path,
                                                       prefix: str) -> None:
    provider = make_provider("local")
    for name, meta in (("c.webm", {}), ("d.webm", {"sha256": "not-hex"})):
        provider.upload_file(prefix + name, small_file, content_type="video/webm", metadata=meta)
        assert fetch(provider, prefix + name) == small_file.read_bytes()
