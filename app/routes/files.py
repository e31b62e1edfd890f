"""Signed downloads for the local provider, with HTTP Range support (players seek with Range requests)."""
from __future__ import annotations

from flask import Blueprint, request, send_file

from app.services import services
from storage_providers import ObjectNotFoundError, StorageError
from storage_providers.local import LocalStorage
from workers.errors import NotFound

bp = Blueprint("files", __name__)


@bp.get("/files/<path:key>")
def download(key: str):
    provider = services().provider
    if not isinstance(provider, LocalStorage):
        raise NotFound("no such file")
    try:
        expires = int(request.args.get("expires", ""))
        signature = request.args.get("sig", "")
        if not signature.isascii():  # hmac.compare_digest raises TypeError on non-ASCII text
            raise ValueError("signature is not ASCII")
        path = provider.verify_download(key, expires, signature)
    except (ValueError, ObjectNotFoundError, StorageError):
        raise NotFound("no such file, or the link has expired") from None
    info = provider.head(key)
    return send_file(path, mimetype=info.content_type or "application/octet-stream", conditional=True,
                     download_name=key.rsplit("/", 1)[-1], max_age=0)
