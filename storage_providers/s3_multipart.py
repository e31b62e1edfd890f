"""S3 multipart uploads that resume from a checkpoint: adopt the saved upload or start one, send the
missing parts, complete. Kept apart from s3.py so the provider reads as its plain object operations."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from storage_providers.base import (
    ChecksumMismatchError,
    ProgressCallback,
    UploadCheckpoint,
    complete_parts_ahead,
)


def b64_sha256(data: bytes) -> str:
    """The base64 SHA-256 S3 expects in ChecksumSHA256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


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
        """Create (or resume) the multipart upload, send the missing parts, complete it."""
        identity = meta.get("sha256") or meta["sha256-parts"]
        state = self._resumable_state(full_key, total, identity, checkpoint, adopt_ahead="sha256-parts" in meta)
        if state is None:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full_key, ContentType=content_type,
                Metadata=meta, ChecksumAlgorithm="SHA256",
            )
            state = {"provider": self.provider, "bucket": self.bucket, "key": full_key,
                     "upload_id": created["UploadId"], "size": total, "part_size": self.part_size,
                     "sha256": identity, "parts": []}
            if checkpoint:
                checkpoint.save(state)
        try:
            self._send_parts(state, path, progress, checkpoint)
            self.client.complete_multipart_upload(
                Bucket=state["bucket"], Key=full_key, UploadId=state["upload_id"],
                MultipartUpload={"Parts": sorted(state["parts"], key=lambda p: p["PartNumber"])},
            )
        except BaseException:
            if checkpoint is None:  # nobody could resume or abort it later: do it now
                self.abort(state, quiet=True)
            raise
        if checkpoint:
            checkpoint.clear()

    def _send_parts(self, state: dict, path: Path, progress: ProgressCallback | None,
                    checkpoint: UploadCheckpoint | None) -> None:
        """Upload the parts not confirmed yet (those after the confirmed run; with parts sent ahead while recording,
        also the ones before and between them), saving the checkpoint after each."""
        part_size, total, parts = state["part_size"], state["size"], state["parts"]
        count = max(1, -(-total // part_size))
        parts[:] = [p for p in parts if p["PartNumber"] <= count]
        held = {p["PartNumber"] for p in parts}
        sent = min(sum(min(part_size, total - (n - 1) * part_size) for n in held), total)
        if progress and sent:
            progress(sent, total)
        with open(path, "rb") as source:
            for number in range(1, count + 1):
                if number in held:
                    continue
                source.seek((number - 1) * part_size)
                chunk = source.read(part_size)
                self._send_part(state, number, chunk)
                if checkpoint:
                    checkpoint.save(state)
                sent += len(chunk)
                if progress:
                    progress(sent, total)

    def _send_part(self, state: dict, number: int, chunk: bytes) -> None:
        digest = b64_sha256(chunk)
        answer = self.client.upload_part(
            Bucket=state["bucket"], Key=state["key"], UploadId=state["upload_id"],
            PartNumber=number, Body=chunk, ChecksumSHA256=digest,
        )
        check_echo(answer, digest, state["key"])
        state["parts"] = [p for p in state["parts"] if p["PartNumber"] != number]
        state["parts"].append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": digest})

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

    def _resumable_state(self, full_key: str, total: int, sha256: str,
                         checkpoint: UploadCheckpoint | None, adopt_ahead: bool = False) -> dict | None:
        """The saved upload if it is for these bytes and S3 still holds its parts; else None. An upload sent
        ahead while recording is adopted only by the file it was sent from (a live output, `adopt_ahead`)."""
        from botocore.exceptions import ClientError

        state = checkpoint.load() if checkpoint else None
        if not state:
            return None
        if state.get("ahead") and adopt_ahead and state.get("part_size") == self.part_size:
            state = {**state, "ahead": False, "size": total, "sha256": sha256}
        wanted = {"provider": self.provider, "bucket": self.bucket, "key": full_key, "size": total,
                  "sha256": sha256, "part_size": self.part_size}
        if any(state.get(name) != value for name, value in wanted.items()):
            self.abort(state, quiet=True)  # an upload of other bytes: its parts are useless
            checkpoint.clear()
            return None
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=state["bucket"], Key=full_key, UploadId=state["upload_id"]
            )
            stored = {p["PartNumber"]: p["ETag"] for page in pages for p in page.get("Parts", [])}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            checkpoint.clear()
            return None
        kept = [part for part in state.get("parts", []) if stored.get(part["PartNumber"]) == part["ETag"]]
        state["parts"] = kept
        checkpoint.save(state)
        return state

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
