"""An upload that keeps failing leaves the recording failed with a clear error and its chunks kept; requeue completes it."""
from __future__ import annotations

import os
from pathlib import Path

from tests.media import Recording, encode_webm, probe, slice_timeslice


def test_failed_upload_keeps_chunks_and_requeue_completes(api, app, worker, stack_env):
    """Through the real worker: stop queues finalize, every upload attempt fails, the recording fails with its
    chunks kept; `flask requeue` queues it again and, with storage back, it completes."""
    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    blocker = Path(os.environ["LOCAL_STORAGE_DIR"]) / "recordings" / api.room
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a regular file where the room's folder goes: every upload under it fails (ENOTDIR, even for root)")
    try:
        assert api.stop().status_code == 202
        body = api.wait_final(recording_id)
    finally:
        blocker.unlink()
    assert body["state"] == "failed" and body["outputs"] == []
    assert "upload of recordings/" in body["error"] and "failed" in body["error"]
    assert "Not a directory" in body["error"] and os.environ["LOCAL_STORAGE_DIR"] not in body["error"]  # no server path
    staged = Path(stack_env["STAGING_DIR"]) / recording_id / "alice" / "video"
    assert len(list(staged.glob("*.chunk"))) == 4

    runner = app.test_cli_runner()
    result = runner.invoke(args=["requeue", recording_id])
    assert result.exit_code == 0, result.output
    body = api.wait_final(recording_id)
    assert body["state"] == "completed" and body["error"] is None
    assert probe(api.output_path(body, "alice")).frames["video"] > 0
    again = runner.invoke(args=["requeue", recording_id])
    assert again.exit_code != 0 and "only failed recordings" in again.output


def test_token_cli_mints_verifiable_tokens(app):
    from app.auth import decode_token
    from app.services import services

    result = app.test_cli_runner().invoke(args=["token", "--room", "r1", "--sub", "bob", "--role", "host", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        principal = decode_token(result.output.strip(), services().settings.jwt_secret)
    assert (principal.room, principal.sub, principal.role) == ("r1", "bob", "host")
    bad = app.test_cli_runner().invoke(args=["token", "--room", "r/1", "--sub", "bob"])
    assert bad.exit_code != 0
