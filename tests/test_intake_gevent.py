"""Chunk intake under the Procfile's gevent worker, where a local chunk's disk work (free-space check, write, fsync,
rename) runs in gevent's thread pool: the bytes land whole, and a failure in the pool still answers as intake's own."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.live_gunicorn import web_line
from tests.media import WEBM_HEADER

UPLOADERS = 8
CHUNKS_EACH = 5


@pytest.fixture(autouse=True)
def local_staging(staging_backend) -> None:
    if staging_backend != "local":
        pytest.skip("reads the local staging folder")


def body(participant: int, sequence: int) -> bytes:
    return WEBM_HEADER if sequence == 0 else bytes([participant, sequence]) * 20_000


def test_concurrent_uploads_through_the_pool_are_staged_whole(live_gunicorn, api, rec, stack_env) -> None:
    answers: dict[tuple[int, int], int] = {}

    def upload(participant: int) -> None:
        headers = {**api.auth(f"p{participant}", "participant"), "Content-Type": "application/octet-stream"}
        for sequence in range(CHUNKS_EACH):
            url = f"/video-calls/recordings/{rec}/participants/p{participant}/video/chunks/{sequence}"
            answers[participant, sequence] = live_gunicorn.request("PUT", url, headers=headers,
                                                                   body=body(participant, sequence)).status

    threads = [threading.Thread(target=upload, args=(p,)) for p in range(UPLOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(answers.values()) == {202}, answers
    assert len(answers) == UPLOADERS * CHUNKS_EACH
    for participant in range(UPLOADERS):
        folder = Path(stack_env["STAGING_DIR"]) / rec / f"p{participant}" / "video"
        staged = {int(p.name.split("-")[0]): p.read_bytes() for p in folder.glob("*.chunk")}
        assert staged == {s: body(participant, s) for s in range(CHUNKS_EACH)}
        assert not list(folder.glob(".*.tmp"))


def test_a_failure_inside_the_pool_is_503_and_stages_nothing(stack_env, tmp_root, api, rec) -> None:
    # more free bytes than any disk has: the free-space check refuses in the pool
    with web_line(stack_env, tmp_root, "gunicorn-full", STAGING_MIN_FREE_BYTES=str(2**62)) as server:
        headers = {**api.auth("alice", "participant"), "Content-Type": "application/octet-stream"}
        reply = server.request("PUT", f"/video-calls/recordings/{rec}/participants/alice/video/chunks/0",
                               headers=headers, body=WEBM_HEADER)
        assert reply.status == 503, reply.body
        assert reply.json()["error"]["code"] == "unavailable" and int(reply.headers["retry-after"]) >= 1
        folder = Path(stack_env["STAGING_DIR"]) / rec
        assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json"]
        assert api.status(rec).get_json()["participants"] == {}
