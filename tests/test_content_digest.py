"""RFC 9530 Content-Digest on the raw PUT: the bytes the PUT delivers are what is stored, so a Content-Digest is
verified like Repr-Digest (issue 13: a wrong one alone was accepted 202)."""
from __future__ import annotations

import base64
import hashlib

import pytest

from tests.media import WEBM_HEADER
from tests.test_integrity import error, no_trace, repr_digest


def put(api, rec, seq, data, **digests):
    headers = {**api.auth("alice", "participant"), "Content-Type": "application/octet-stream"}
    headers.update({name.replace("_", "-").title(): value for name, value in digests.items()})
    return api.client.put(f"/video-calls/recordings/{rec}/participants/alice/video/chunks/{seq}", data=data,
                          headers=headers)


def held(api, rec):
    answer = api.client.get(f"/video-calls/recordings/{rec}/participants/alice/video/chunks", headers=api.auth())
    return answer.get_json()["ranges"]


def test_a_wrong_content_digest_alone_is_checksum_mismatch_and_leaves_no_trace(api, stack_env, rec):
    err = error(put(api, rec, 0, WEBM_HEADER, content_digest=repr_digest(b"other bytes")), 400, "checksum_mismatch")
    assert err["expected"] == hashlib.sha256(b"other bytes").hexdigest()
    assert err["received"] == hashlib.sha256(WEBM_HEADER).hexdigest()
    no_trace(api, stack_env, rec)


def test_a_matching_content_digest_is_accepted_alone_and_beside_a_matching_repr_digest(api, rec):
    assert put(api, rec, 0, WEBM_HEADER, content_digest=repr_digest(WEBM_HEADER)).status_code == 202
    both = put(api, rec, 1, b"abc", content_digest=repr_digest(b"abc"), repr_digest=repr_digest(b"abc"))
    assert both.status_code == 202
    other_algorithm = f"sha-512=:{base64.b64encode(hashlib.sha512(b'x').digest()).decode()}:"
    assert put(api, rec, 2, b"def", content_digest=other_algorithm).status_code == 202
    assert held(api, rec) == [[0, 2]]


@pytest.mark.parametrize("wrong", ["content_digest", "repr_digest"])
def test_both_headers_must_match_the_bytes(api, stack_env, rec, wrong):
    digests = {"content_digest": repr_digest(WEBM_HEADER), "repr_digest": repr_digest(WEBM_HEADER)}
    digests[wrong] = repr_digest(b"corrupted")
    err = error(put(api, rec, 0, WEBM_HEADER, **digests), 400, "checksum_mismatch")
    assert err["expected"] == hashlib.sha256(b"corrupted").hexdigest()
    no_trace(api, stack_env, rec)


@pytest.mark.parametrize("header", ["sha-256=abc", "sha-256=:YWJj:", "sha-256=:" + "A" * 2000 + ":"])
def test_a_malformed_content_digest_is_invalid_request_even_beside_a_good_repr_digest(api, stack_env, rec, header):
    err = error(put(api, rec, 0, WEBM_HEADER, content_digest=header, repr_digest=repr_digest(WEBM_HEADER)),
                400, "invalid_request")
    assert "Content-Digest" in err["message"]
    no_trace(api, stack_env, rec)

