"""S3 multipart uploads that resume from a checkpoint: adopt the saved upload or start one, send the
missing parts, complete. Kept apart from s3.py so the provider reads as its plain object operations."""
from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from storage_providers.base import (
    ChecksumMismatchError,
    ProgressCallback,
    UploadCheckpoint,
    complete_parts_ahead,
    count_parts,
    header_bytes,
    part_span,
    parts_in_flight,
    put_parts_concurrently,
)


def b64_sha256(data: bytes) -> str:
    """The base64 SHA-256 S3 expects in ChecksumSHA256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _no_such_upload(exc: BaseException | None) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload"


def check_echo(answer: Mapping[str, Any], digest: str, full_key: str) -> None:
    """S3 verifies x-amz-checksum-sha256 itself; this also catches stores that only echo it."""
    echoed = answer.get("ChecksumSHA256")
    if echoed and echoed.split("-")[0] != digest:
        raise ChecksumMismatchError(f"s3 stored different bytes for {full_key!r}")


@dataclass(frozen=True)
class MultipartUploader:
    """One bucket's multipart uploads through one boto3 client; botocore errors pass through untranslated."""

    client: Any
    bucket: str
    part_size: int
    provider: str = "s3"

    def upload(self, full_key: str, path: Path, total: int, content_type: str, meta: dict[str, str],
               progress: ProgressCallback | None, checkpoint: UploadCheckpoint | None) -> None:
        """Create (or resume) the multipart upload, send the missing parts, complete it. A resumed upload's parts
        are checked with ListParts while the missing ones go up, so at a live output's stop the check costs no
        round trip of its own; an upload S3 no longer has starts again."""
        identity = meta.get("sha256") or meta["sha256-parts"]
        head = header_bytes(meta)
        state = self._saved_state(full_key, total, identity, checkpoint, adopt_ahead="sha256-parts" in meta,
                                  head=head)
        if state is not None:
            from botocore.exceptions import ClientError

            try:
                self._finish(state, path, progress, checkpoint, verify=True)
                return
            except ClientError as exc:
                if not _no_such_upload(exc):
                    raise
                checkpoint.clear()  # type: ignore[union-attr] - a saved state implies a checkpoint
        created = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full_key, ContentType=content_type,
            Metadata=meta, ChecksumAlgorithm="SHA256",
        )
        state = {"provider": self.provider, "bucket": self.bucket, "key": full_key,
                 "upload_id": created["UploadId"], "size": total, "part_size": self.part_size,
                 "sha256": identity, "head": head, "parts": []}
        if checkpoint:
            checkpoint.save(state)
        try:
            self._finish(state, path, progress, checkpoint, verify=False)
        except BaseException:
            if checkpoint is None:  # nobody could resume or abort it later: do it now
                self.abort(state, quiet=True)
            raise

    def _finish(self, state: dict, path: Path, progress: ProgressCallback | None,
                checkpoint: UploadCheckpoint | None, verify: bool) -> None:
        """Send the parts the state lacks, several at once, and complete. With `verify` (a saved upload), ListParts
        runs beside them; a part the state holds that S3 no longer has (or holds other bytes of) goes again before
        the complete."""
        held_before = list(state["parts"])
        with ThreadPoolExecutor(max_workers=parts_in_flight(self.part_size) + 1, thread_name_prefix="s3-parts") as pool:
            listing = pool.submit(self._stored_parts, state) if verify else None
            try:
                self._send_parts(state, path, progress, checkpoint, pool)
            except Exception:
                if listing is not None and _no_such_upload(listing.exception()):
                    listing.result()  # the upload is gone (a part's error may not say so): that is the cause
                raise
            if listing is not None:
                stored = listing.result()
                lost = [p for p in held_before if stored.get(p["PartNumber"]) != p["ETag"]]
                if lost:
                    state["parts"] = [p for p in state["parts"] if p not in lost]
                    if checkpoint:
                        checkpoint.save(state)
                    self._send_parts(state, path, None, checkpoint, pool)
        self.client.complete_multipart_upload(
            Bucket=state["bucket"], Key=state["key"], UploadId=state["upload_id"],
            MultipartUpload={"Parts": sorted(state["parts"], key=lambda p: p["PartNumber"])},
        )
        if checkpoint:
            checkpoint.clear()

    def _send_parts(self, state: dict, path: Path, progress: ProgressCallback | None,
                    checkpoint: UploadCheckpoint | None, pool: ThreadPoolExecutor) -> None:
        """Upload the parts not confirmed yet (those after the confirmed run; with parts sent ahead while recording,
        also the ones before and between them), several at once on `pool`. Each part is recorded, and the checkpoint
        saved, as it is confirmed; on a failure the parts not started are dropped, those running are waited for and
        kept, and the first error is raised."""
        part_size, total, parts, head = state["part_size"], state["size"], state["parts"], state.get("head", 0)
        count = count_parts(total, part_size, head)
        parts[:] = [p for p in parts if p["PartNumber"] <= count]
        held = {p["PartNumber"] for p in parts}
        sent = min(sum(part_span(n, total, part_size, head)[1] for n in held), total)
        if progress and sent:
            progress(sent, total)
        missing = [n for n in range(1, count + 1) if n not in held]
        if not missing:
            return
        for part, length in put_parts_concurrently(
                path, missing, lambda fd, number: self._read_and_put(state, fd, number), pool,
                parts_in_flight(state["part_size"])):
            state["parts"] = [p for p in state["parts"] if p["PartNumber"] != part["PartNumber"]] + [part]
            if checkpoint:
                checkpoint.save(state)
            sent += length
            if progress:
                progress(sent, total)

    def _read_and_put(self, state: dict, fd: int, number: int) -> tuple[dict, int]:
        """One part read at its offset (pread: no shared file position between threads) and uploaded."""
        offset, length = part_span(number, state["size"], state["part_size"], state.get("head", 0))
        chunk = os.pread(fd, length, offset)
        return self._put_part(state, number, chunk), len(chunk)

    def _put_part(self, state: dict, number: int, chunk: bytes) -> dict:
        """Upload one part; its entry for the state (number, ETag, checksum), which the caller records."""
        digest = b64_sha256(chunk)
        answer = self.client.upload_part(
            Bucket=state["bucket"], Key=state["key"], UploadId=state["upload_id"],
            PartNumber=number, Body=chunk, ChecksumSHA256=digest,
        )
        check_echo(answer, digest, state["key"])
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": digest}

    def _send_part(self, state: dict, number: int, chunk: bytes) -> None:
        part = self._put_part(state, number, chunk)
        state["parts"] = [p for p in state["parts"] if p["PartNumber"] != number] + [part]

    def upload_ahead(self, full_key: str, path: Path, numbers: list[int], content_type: str, meta: dict[str, str],
                     checkpoint: UploadCheckpoint, limit: int | None = None) -> int:
        """While the file still grows: send the given parts (final bytes already) of an upload marked `ahead`,
        created on first use; the finalize after stop adopts it (upload with `sha256-parts` metadata). Returns how
        many parts were sent now (at most `limit`)."""
        state = checkpoint.load()
        if not state or not state.get("ahead") or state.get("key") != full_key \
                or state.get("part_size") != self.part_size or state.get("provider") != self.provider:
            if state:
                return 0  # another upload of this key (a finalize's): not ours to touch
            created = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key, ContentType=content_type,
                                                          Metadata=meta, ChecksumAlgorithm="SHA256")
            state = {"provider": self.provider, "bucket": self.bucket, "key": full_key, "upload_id": created["UploadId"],
                     "part_size": self.part_size, "ahead": True, "parts": []}
            checkpoint.save(state)
        held = {p["PartNumber"] for p in state["parts"]}
        sent = 0
        for number, chunk in complete_parts_ahead(path, numbers, held, self.part_size, limit):
            self._send_part(state, number, chunk)
            checkpoint.save(state)
            sent += 1
        return sent

    def _saved_state(self, full_key: str, total: int, sha256: str,
                     checkpoint: UploadCheckpoint | None, adopt_ahead: bool = False, head: int = 0) -> dict | None:
        """The saved upload if it is for these bytes (not asked of S3 yet: _finish checks its parts); else None,
        and a saved upload of other bytes is aborted. An upload sent ahead while recording is adopted only by the
        file it was sent from (a live output, `adopt_ahead`)."""
        state = checkpoint.load() if checkpoint else None
        if not state:
            return None
        if state.get("ahead") and adopt_ahead and state.get("part_size") == self.part_size:
            state = {**state, "ahead": False, "size": total, "sha256": sha256, "head": head}
        wanted = {"provider": self.provider, "bucket": self.bucket, "key": full_key, "size": total,
                  "sha256": sha256, "part_size": self.part_size}
        if any(state.get(name) != value for name, value in wanted.items()) or state.get("head", 0) != head:
            self.abort(state, quiet=True)  # an upload of other bytes: its parts are useless
            checkpoint.clear()  # type: ignore[union-attr]
            return None
        checkpoint.save(state)  # type: ignore[union-attr] - adopted: no live step sends to it any more
        return state

    def _stored_parts(self, state: dict) -> dict[int, str]:
        """Part number -> ETag of what S3 holds for the upload (ListParts, every page); raises ClientError
        NoSuchUpload when S3 no longer has the upload."""
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=state["bucket"], Key=state["key"], UploadId=state["upload_id"]
        )
        return {p["PartNumber"]: p["ETag"] for page in pages for p in page.get("Parts", [])}

    def abort(self, state: Mapping[str, Any], *, quiet: bool = False) -> None:
        """Abort the multipart upload a checkpoint describes; an already gone one is fine."""
        from botocore.exceptions import BotoCoreError, ClientError

        if state.get("provider") != self.provider or not state.get("upload_id"):
            return
        try:
            self.client.abort_multipart_upload(Bucket=state["bucket"], Key=state["key"],
                                               UploadId=state["upload_id"])
        except ClientError as exc:
            if not quiet and exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        except BotoCoreError:
            if not quiet:
                raise


__all__ = ["MultipartUploader", "b64_sha256", "check_echo"]
