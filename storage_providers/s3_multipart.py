"""S3 multipart uploads that resume from a checkpoint: adopt the saved upload or start one, send the
missing parts, complete. Kept apart from s3.py so the provider reads as its plain object operations."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from storage_providers.base import ChecksumMismatchError, ProgressCallback, UploadCheckpoint


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
        state = self._resumable_state(full_key, total, meta["sha256"], checkpoint)
        if state is None:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full_key, ContentType=content_type,
                Metadata=meta, ChecksumAlgorithm="SHA256",
            )
            state = {"provider": self.provider, "bucket": self.bucket, "key": full_key,
                     "upload_id": created["UploadId"], "size": total, "part_size": self.part_size,
                     "sha256": meta["sha256"], "parts": []}
            if checkpoint:
                checkpoint.save(state)
        try:
            self._send_parts(state, path, progress, checkpoint)
            self.client.complete_multipart_upload(
                Bucket=state["bucket"], Key=full_key, UploadId=state["upload_id"],
                MultipartUpload={"Parts": state["parts"]},
            )
        except BaseException:
            if checkpoint is None:  # nobody could resume or abort it later: do it now
                self.abort(state, quiet=True)
            raise
        if checkpoint:
            checkpoint.clear()

    def _send_parts(self, state: dict, path: Path, progress: ProgressCallback | None,
                    checkpoint: UploadCheckpoint | None) -> None:
        """Upload the parts after the confirmed ones, saving the checkpoint after each."""
        part_size, total, parts = state["part_size"], state["size"], state["parts"]
        sent = min(len(parts) * part_size, total)
        if progress and sent:
            progress(sent, total)
        with open(path, "rb") as source:
            source.seek(sent)
            while chunk := source.read(part_size):
                number = len(parts) + 1
                digest = b64_sha256(chunk)
                answer = self.client.upload_part(
                    Bucket=state["bucket"], Key=state["key"], UploadId=state["upload_id"],
                    PartNumber=number, Body=chunk, ChecksumSHA256=digest,
                )
                check_echo(answer, digest, state["key"])
                parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": digest})
                if checkpoint:
                    checkpoint.save(state)
                sent += len(chunk)
                if progress:
                    progress(sent, total)

    def _resumable_state(self, full_key: str, total: int, sha256: str,
                         checkpoint: UploadCheckpoint | None) -> dict | None:
        """The saved upload if it is for these bytes and S3 still holds its parts; else None."""
        from botocore.exceptions import ClientError

        state = checkpoint.load() if checkpoint else None
        if not state:
            return None
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
        kept: list[dict] = []
        for part in state.get("parts", []):  # keep the run of parts S3 confirms, in order
            if stored.get(part["PartNumber"]) != part["ETag"]:
                break
            kept.append(part)
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
