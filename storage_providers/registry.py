"""Provider name → module. Adding a backend is one module and one line here."""
from __future__ import annotations

import importlib
import os
from typing import Mapping

from storage_providers.base import StorageConfigError, StorageProvider

PROVIDERS: dict[str, str] = {
    "local": "storage_providers.local",
    "s3": "storage_providers.s3",
    "gcs": "storage_providers.gcs",
    "vercel-blob": "storage_providers.vercel_blob",
}
"""Each module exposes create(env) -> StorageProvider and imports its SDK lazily."""


class UnknownProviderError(StorageConfigError):
    """Raised when STORAGE_PROVIDER names no registered backend."""


def detect_provider_name(env: Mapping[str, str] | None = None) -> str:
    """STORAGE_PROVIDER if set, else guessed from which credentials the environment holds."""
    env = os.environ if env is None else env
    name = env.get("STORAGE_PROVIDER", "").strip().lower()
    if name and name != "auto":
        if name not in PROVIDERS:
            raise UnknownProviderError(
                f"STORAGE_PROVIDER={name!r} is not one of {', '.join(sorted(PROVIDERS))}"
            )
        return name
    if env.get("BLOB_READ_WRITE_TOKEN"):
        return "vercel-blob"
    if env.get("S3_BUCKET"):
        return "s3"
    if env.get("GCS_BUCKET"):
        return "gcs"
    return "local"


def create_provider(name: str | None = None, env: Mapping[str, str] | None = None) -> StorageProvider:
    """Build the named (or detected) provider from the environment; nothing connects yet."""
    env = os.environ if env is None else env
    name = name or detect_provider_name(env)
    if name not in PROVIDERS:
        raise UnknownProviderError(f"STORAGE_PROVIDER={name!r} is not one of {', '.join(sorted(PROVIDERS))}")
    module = importlib.import_module(PROVIDERS[name])
    return module.create(env)
