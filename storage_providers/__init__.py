"""Where finished recordings go: one interface, one module per backend, a registry."""
from storage_providers.base import (
    ObjectInfo,
    ObjectNotFoundError,
    PermanentStorageError,
    StorageError,
    StorageProvider,
    StorageUnavailableError,
    UploadCheckpoint,
)
from storage_providers.registry import PROVIDERS, create_provider, detect_provider_name

__all__ = [
    "ObjectInfo",
    "ObjectNotFoundError",
    "PROVIDERS",
    "PermanentStorageError",
    "StorageError",
    "StorageProvider",
    "StorageUnavailableError",
    "UploadCheckpoint",
    "create_provider",
    "detect_provider_name",
]
