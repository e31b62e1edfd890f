"""Per-process resources for tasks, built on first use (after the prefork fork, never at import)."""
from __future__ import annotations

from functools import lru_cache

from workers.resources import Resources
from workers.settings import get_settings


@lru_cache(maxsize=1)
def runtime() -> Resources:
    return Resources.build(get_settings())
