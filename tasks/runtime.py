"""Per-process resources for tasks, built on first use (after the prefork fork, never at import)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from workers.finalize import Finalizer
from workers.resources import Resources
from workers.settings import get_settings


@dataclass(frozen=True)
class Runtime(Resources):
    finalizer: Finalizer | None = None


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    res = Resources.build(get_settings())
    finalizer = Finalizer(store=res.store, staging=res.staging, provider=res.provider, publisher=res.events,
                          settings=res.settings)
    return Runtime(**res.__dict__, finalizer=finalizer)
