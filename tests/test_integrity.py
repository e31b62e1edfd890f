"""Per-chunk integrity: JSON sha256 and RFC 9530 Repr-Digest; a mismatch is 400 and leaves no trace anywhere."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from tests.media import WEBM_HEADER


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def put(api, rec, seq, data, digest, participant="alice"):
    headers = {**api.auth(participant, "participant"), "Content-Type": "application/octet-stream",
               "Repr-Digest": digest}
    url = f"/video-calls/recordings/{rec}/participants/{participant}/video/chunks/{seq}"
    return api.client.put(url, data=data, headers=headers)


def post(api, rec, seq, data, sha256, participant="alice"):
    body = {"recordingId": rec, "participantId": participant, "type": "video", "sequence": seq,
            "chunk": base64.b64encode(data).decode(), "sha256": sha256}
    return api.client.post("/video-calls/chunks/upload", json=body, headers=api.auth(participant, "participant"))


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def no_trace(api, stack_env, rec):
    """Nothing staged, nothing counted: the status has no participant and the server holds no chunk."""
    root = Path(stack_env["STAGING_DIR"]) / rec
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "recording.json"] if root.exists() else []
    assert files == []
    assert api.status(rec).get_json()["participants"] == {}
    held = api.client.get(f"/video-calls/recordings/{rec}/participants/alice/video/chunks", headers=api.auth())
    assert held.get_json() == {"ranges": [], "chunks": 0, "bytes": 0, "next": None}


def test_matching_digests_are_accepted_on_both_routes(api, rec):
    assert put(api, rec, 0, WEBM_HEADER, repr_digest(WEBM_HEADER)).status_code == 202
    other = b"\x01" * 40
    assert post(api, rec, 1, other, hashlib.sha256(other).hexdigest().upper()).status_code == 202
    mixed = f"sha-512=:{base64.b64encode(hashlib.sha512(b'x').digest()).decode()}:, {repr_digest(b'abc')}"
    assert put(api, rec, 2, b"abc", mixed).status_code == 202
    held = api.client.get(f"/video-calls/recordings/{rec}/participants/alice/video/chunks", headers=api.auth())
    assert held.get_json()["ranges"] == [[0, 2]]


def test_mismatch_is_refused_on_both_routes_and_nothing_is_stored(api, stack_env, rec):
    err = error(put(api, rec, 0, WEBM_HEADER, repr_digest(b"other bytes")), 400, "checksum_mismatch")
    assert err["received"] == hashlib.sha256(WEBM_HEADER).hexdigest()
    error(post(api, rec, 0, WEBM_HEADER, hashlib.sha256(b"other").hexdigest()), 400, "checksum_mismatch")
    no_trace(api, stack_env, rec)


def test_checksum_is_checked_before_the_recording_exists_and_after_the_body_shape(api, rec):
    error(put(api, "rec_missing", 0, WEBM_HEADER, repr_digest(b"x")), 400, "checksum_mismatch")
    error(post(api, "rec_missing", 0, WEBM_HEADER, hashlib.sha256(b"x").hexdigest()), 400, "checksum_mismatch")
    assert put(api, "rec_missing", 0, WEBM_HEADER, repr_digest(WEBM_HEADER)).status_code == 404


@pytest.mark.parametrize("header", ["sha-256=abc", "sha-256=:!!!:", "sha-256=:YWJj:", "sha-256", "SHA-256=:YWJj:",
                                    "sha-256=:" + "A" * 2000 + ":"])
def test_a_malformed_repr_digest_is_invalid_request(api, stack_env, rec, header):
    error(put(api, rec, 0, WEBM_HEADER, header), 400, "invalid_request")
    no_trace(api, stack_env, rec)


@pytest.mark.parametrize("sha256", ["abc", "g" * 64, 12, "0" * 65])
def test_a_malformed_sha256_field_is_invalid_request(api, stack_env, rec, sha256):
    error(post(api, rec, 0, WEBM_HEADER, sha256), 400, "invalid_request")
    no_trace(api, stack_env, rec)
