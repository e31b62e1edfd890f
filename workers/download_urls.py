"""Download links for status polls: minted once per key and reused while young, so a poll costs no provider call."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

from storage_providers import StorageError

Mint = Callable[[str, int], str]
"""provider.download_url: (key, expires_in seconds) → URL; may be a network call (Vercel Blob HEADs the blob)."""

MAX_REUSE_SECONDS = 300
MAX_ENTRIES = 4096


class DownloadUrls:
    """A link is reused for a tenth of its lifetime (at most 5 minutes), so it always has 90% of its life left;
    a provider that cannot mint one gives None (status answers 200 without the link), never an error."""

    def __init__(self, mint: Mint, ttl_seconds: int, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._mint, self._ttl, self._max, self._clock = mint, ttl_seconds, max_entries, clock
        self.reuse_seconds = max(0.0, min(MAX_REUSE_SECONDS, ttl_seconds / 10))
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def url(self, key: str) -> str | None:
        """The cached link while young, else a fresh one; None while the provider is down or the object missing."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
        try:
            url = self._mint(key, self._ttl)
        except StorageError:
            return None
        with self._lock:
            self._cache[key] = (url, now + self.reuse_seconds)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return url
