"""Vercel Blob multipart uploads whose parts are sent by several processes over hours: created at a live output's
first final part, continued by later live steps, completed by the finalize after stop.

Why not the SDK's public `multipart_upload_blob`: it is one scoped `with` block that numbers parts in the order
they are sent and completes on exit, so it cannot send part 7 before part 1, nor continue an upload another process
created. The SDK's own client underneath it (BlobApiClient in vercel.blob._internal, the SDK pinned at
vercel-blob==0.5.0 in requirements.txt) has exactly Vercel's documented calls: create, upload part N with an upload
id and key, complete with the parts. This module is the one place that reaches it, so the SDK still sends the
requests (its headers, auth and error mapping), and a change in a new SDK shows up here and in its tests.

Vercel Blob has no abort call for a multipart upload and no call listing its parts: an upload never completed is
not a blob, and nothing of it is visible at the pathname; Vercel drops it on its own. Nothing checks that the parts
are still there before complete: complete fails if they are not, and the caller then uploads the file whole.
"""
from __future__ import annotations

import contextvars
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage_providers.base import (ProgressCallback, UploadCheckpoint, complete_parts_ahead, count_parts,
                                    header_bytes, part_span, parts_in_flight, put_parts_concurrently)

PROVIDER = "vercel-blob"


@dataclass(frozen=True)
class BlobMultipart:
    """One multipart upload's calls, inside an open SDK session (VercelBlobStorage._sdk); SDK errors pass through."""

    pathname: str
    content_type: str
    access: str

    def _client(self) -> tuple[Any, Any]:
        from vercel._internal.core.iter_coroutine import iter_coroutine
        from vercel._internal.core.session import get_active_sync_session
        from vercel.blob._internal.service import get_sync_blob_service

        service = get_sync_blob_service(get_active_sync_session())
        service.check_open()
        return service, iter_coroutine

    def _request(self) -> Any:
        from vercel.blob._internal.api_client import _PutRequest

        return _PutRequest(pathname=self.pathname, access=self.access, content_type=self.content_type,
                           allow_overwrite=True)

    @staticmethod
    def _created(state: dict) -> Any:
        from vercel.blob._internal.api_client import _MultipartCreated

        return _MultipartCreated(key=state["key"], uploadId=state["upload_id"])

    def create(self) -> tuple[str, str]:
        """A new upload: (Vercel's key for it, upload id)."""
        service, run = self._client()
        created = run(service._api_client.create_multipart(self._request(),
                                                           credentials=run(service._get_credentials())))
        return created.key, created.upload_id

    def send_part(self, state: dict, number: int, data: bytes) -> dict:
        """Send part `number`; its entry for complete. Reads `state`, never changes it, so several parts may be in
        flight at once (in threads that run in the session's context: SessionPool)."""
        service, run = self._client()
        etag = run(service._api_client.upload_part(self._request(), self._created(state), number, data, len(data),
                                                   credentials=run(service._get_credentials())))
        return {"partNumber": number, "etag": etag}

    def upload_part(self, state: dict, number: int, data: bytes) -> None:
        """Send part `number` and record its etag in state (replacing an earlier send of that number)."""
        _record(state, self.send_part(state, number, data))

    def complete(self, state: dict) -> None:
        """Publish the blob at the pathname from the parts, in part order."""
        service, run = self._client()
        parts = sorted(state["parts"], key=lambda p: p["partNumber"])
        run(service._api_client.complete_multipart(self._request(), self._created(state), parts,
                                                   credentials=run(service._get_credentials())))


def _record(state: dict, part: dict) -> None:
    state["parts"] = [p for p in state["parts"] if p["partNumber"] != part["partNumber"]] + [part]


class SessionPool(ThreadPoolExecutor):
    """A pool whose tasks run in a copy of the submitting thread's context. The SDK finds its open session (the
    store's token and API URL) in a context variable, which a pool thread does not inherit: there it would fall
    back to the SDK's default session, without them."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def matches(state: dict, pathname: str, part_size: int) -> bool:
    """Whether a checkpoint describes a multipart upload of this pathname in parts of this size."""
    return state.get("provider") == PROVIDER and state.get("pathname") == pathname \
        and state.get("part_size") == part_size and bool(state.get("upload_id"))


def send_ahead(upload: BlobMultipart, path: Path, numbers: list[int], part_size: int, checkpoint: UploadCheckpoint,
               limit: int | None) -> int:
    """While the file still grows: send the given parts (final bytes already) of an upload marked `ahead`, created
    on first use. Returns how many parts were sent now (at most `limit`)."""
    saved = checkpoint.load()
    if saved and matches(saved, upload.pathname, part_size) and saved.get("ahead"):
        state = saved
    elif saved:
        return 0  # another upload of this key (a finalize's): not ours to touch
    else:
        key, upload_id = upload.create()
        state = {"provider": PROVIDER, "pathname": upload.pathname, "key": key, "upload_id": upload_id,
                 "part_size": part_size, "ahead": True, "parts": []}
        checkpoint.save(state)
    held = {p["partNumber"] for p in state["parts"]}
    sent = 0
    for number, data in complete_parts_ahead(path, numbers, held, part_size, limit):
        upload.upload_part(state, number, data)
        checkpoint.save(state)
        sent += 1
    return sent


def adoptable(state: dict | None, pathname: str, part_size: int, total: int, identity: str) -> dict | None:
    """The checkpoint's upload if this file may finish it: one sent ahead from this pathname's live output (or
    already adopted by a finalize of these bytes, which a crash interrupted), with only parts that fit the file."""
    if state is None or not matches(state, pathname, part_size):
        return None
    head = header_bytes({"sha256-parts": identity})
    if state.get("ahead"):
        state = {**state, "ahead": False, "size": total, "sha256-parts": identity, "head": head}
    if state.get("size") != total or state.get("sha256-parts") != identity or state.get("head", 0) != head:
        return None
    count = count_parts(total, part_size, head)
    return {**state, "parts": [p for p in state["parts"] if p["partNumber"] <= count]}


def finish(upload: BlobMultipart, state: dict, path: Path, progress: ProgressCallback | None,
           checkpoint: UploadCheckpoint) -> None:
    """Send the parts the adopted upload lacks (the header's part 1 and the tail) at once, as S3's and GCS's are
    (at most parts_in_flight), saving the checkpoint as each is confirmed, and complete it. A part that fails starts
    no further part; those in flight finish and are recorded, so a retry sends only what is still missing."""
    part_size, total, head = state["part_size"], state["size"], state.get("head", 0)
    count = count_parts(total, part_size, head)
    checkpoint.save(state)
    held = {p["partNumber"] for p in state["parts"]}
    sent = sum(part_span(n, total, part_size, head)[1] for n in held)
    if progress and sent:
        progress(sent, total)
    missing = [n for n in range(1, count + 1) if n not in held]

    def read_and_send(fd: int, number: int) -> tuple[dict, int]:
        offset, length = part_span(number, total, part_size, head)
        data = os.pread(fd, length, offset)  # threads share no file position
        return upload.send_part(state, number, data), len(data)

    if missing:
        in_flight = parts_in_flight(part_size)
        with SessionPool(max_workers=in_flight, thread_name_prefix="vercel-parts") as pool:
            for part, length in put_parts_concurrently(path, missing, read_and_send, pool, in_flight):
                _record(state, part)
                checkpoint.save(state)
                sent += length
                if progress:
                    progress(sent, total)
    upload.complete(state)


__all__ = ["BlobMultipart", "adoptable", "finish", "matches", "send_ahead"]
