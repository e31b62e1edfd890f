"""Status polls reuse a young download link instead of asking the provider each time (a HEAD on Vercel Blob),
and a provider outage leaves the link out (None) instead of failing the poll."""
from __future__ import annotations

from pathlib import Path

from tests.storage_fixtures import MakeProvider
from tests.storage_fixtures import prefix, small_file  # noqa: F401 - fixtures, found by name
from tests.vercel_blob_double import VercelBlobDouble


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _requests(store: VercelBlobDouble) -> int:
    with store.lock:
        return len(store.log)


def test_a_young_link_is_reused_and_an_outage_gives_none(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                                                         small_file: Path, prefix: str) -> None:
    from workers.download_urls import DownloadUrls

    provider = make_provider("vercel-blob")
    key, other = prefix + "rec/alice.webm", prefix + "rec/bob.webm"
    provider.upload_file(key, small_file, content_type="video/webm")
    provider.upload_file(other, small_file, content_type="video/webm")
    clock = Clock()
    urls = DownloadUrls(provider.download_url, ttl_seconds=3600, clock=clock)
    assert urls.reuse_seconds == 300  # a tenth of the hour, capped: a served link has 90% of its life left

    before = _requests(vercel_blob_store)
    first = urls.url(key)
    assert first == provider.download_url(key, 3600)
    after_first = _requests(vercel_blob_store)
    assert after_first > before
    for _ in range(5):
        assert urls.url(key) == first
    assert _requests(vercel_blob_store) == after_first  # five polls, no provider call

    vercel_blob_store.fail_next.extend([503] * 8)  # the provider is down
    try:
        assert urls.url(key) == first  # still young: served from the cache
        assert urls.url(other) is None  # not cached: left out, no exception
        clock.now += 301
        assert urls.url(key) is None  # too old to hand out, and no fresh one to be had
    finally:
        with vercel_blob_store.lock:
            vercel_blob_store.fail_next.clear()
    assert urls.url(key) == first  # back up: minted again
    assert urls.url(prefix + "rec/missing.webm") is None  # an object that is not there: no link, no error


def test_the_cache_is_bounded(make_provider: MakeProvider, vercel_blob_store: VercelBlobDouble,
                              small_file: Path, prefix: str) -> None:
    from workers.download_urls import DownloadUrls

    provider = make_provider("vercel-blob")
    keys = [prefix + f"rec/p{i}.webm" for i in range(3)]
    for key in keys:
        provider.upload_file(key, small_file, content_type="video/webm")
    urls = DownloadUrls(provider.download_url, ttl_seconds=3600, max_entries=2, clock=Clock())
    for key in keys:
        assert urls.url(key)
    before = _requests(vercel_blob_store)
    assert urls.url(keys[2]) and urls.url(keys[1])
    assert _requests(vercel_blob_store) == before  # the two newest are kept
    assert urls.url(keys[0])
    assert _requests(vercel_blob_store) > before  # the oldest was evicted and minted again
