"""LIVE_FINALIZE on S3: the output's parts that are final already are uploaded while the room records (multipart,
any order); at stop finalize sends only the header's part and the tail, and completes. Checked on the moto
server from the stored bytes; a participant that goes to batch gets its own upload, never the parts sent ahead."""
from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.conftest import Api
from tests.media import Recording, encode_webm, slice_timeslice
from tests.storage_fixtures import fetch
from tests.test_live import packets
from tests.test_live_flow import batch_packets, live_env  # noqa: F401 - live_env is a fixture, found by name
from workers import keys
from workers.checkpoints import RedisCheckpoint
from workers.manifest import object_prefix
from workers.resources import Resources
from workers.settings import Settings

PART = 5 * 1024 * 1024
"""S3's smallest part, so a test recording of ~16 MB has parts to send ahead."""


@pytest.fixture(scope="module")
def big_recording() -> list[bytes]:
    media = encode_webm(Recording(seconds=12, width=640, height=480, noise=1.0, video_bit_rate=12_000_000))
    assert len(media) > 3 * PART, len(media)
    return slice_timeslice(media, 24)


@pytest.fixture
def s3_live(live_env, moto_server):  # noqa: F811
    from app import create_app

    env = {**live_env, **moto_server, "S3_PREFIX": f"ahead-{uuid.uuid4().hex[:8]}", "STORAGE_PART_SIZE": str(PART)}
    resources = Resources.build(Settings.from_env(env), env)
    resources.finalizer.live.part_size = PART  # type: ignore[union-attr]
    app = create_app(env)
    return Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}"), resources


def record(api: Api, resources: Resources, pieces: list[bytes]) -> str:
    rec = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        if sequence % 6 == 5:
            resources.finalizer.live.step(rec)  # type: ignore[union-attr]
    return rec


def composite(data: bytes, part_size: int) -> str:
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


def ahead_parts(resources: Resources, api: Api, rec: str) -> list[int]:
    key = f"{object_prefix(api.room, rec)}alice.webm"
    state = RedisCheckpoint(resources.redis, rec, key).load() or {}
    return sorted(p["PartNumber"] for p in state.get("parts", [])) if state.get("ahead") else []


def test_parts_sent_while_recording_complete_into_the_live_output(s3_live, big_recording):
    api, resources = s3_live
    rec = record(api, resources, big_recording)
    sent = ahead_parts(resources, api, rec)
    assert sent and sent[0] == 2  # part 1 holds the header's space: it goes at stop
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    data = fetch(resources.provider, output["key"])
    live = resources.staging.output_dir(rec) / "live" / "alice.live.webm"
    assert data == live.read_bytes()  # the parts sent ahead were not sent again, and are the file's bytes
    assert output["checksum"]["composite"] == composite(data, PART)
    assert output["checksum"]["partSize"] == PART
    assert RedisCheckpoint(resources.redis, rec, output["key"]).load() is None


def test_a_participant_sent_to_batch_does_not_reuse_the_parts_sent_ahead(s3_live, big_recording, tmp_path):
    api, resources = s3_live
    rec = record(api, resources, big_recording)
    assert ahead_parts(resources, api, rec)
    resources.redis.delete(keys.live_state(rec))  # the live state is lost: batch makes the output
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    downloaded = tmp_path / "stored.webm"
    downloaded.write_bytes(fetch(resources.provider, output["key"]))
    assert output["sha256"] == hashlib.sha256(downloaded.read_bytes()).hexdigest()
    assert packets(downloaded) == batch_packets(resources, rec, tmp_path)


def test_a_step_sends_at_most_its_bound_of_parts_and_stop_sends_the_rest(s3_live, big_recording, monkeypatch):
    from workers.live import step

    monkeypatch.setattr(step, "MAX_AHEAD_PARTS", 1)
    api, resources = s3_live
    rec = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(big_recording):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
    resources.finalizer.live.step(rec)  # one step over the whole backlog: several parts are final  # type: ignore[union-attr]
    live = resources.staging.output_dir(rec) / "live" / "alice.live.webm"
    assert live.stat().st_size // PART >= 3
    assert ahead_parts(resources, api, rec) == [2]
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    assert fetch(resources.provider, output["key"]) == live.read_bytes()


def test_at_stop_part_one_the_tail_and_the_check_go_together(s3_live, big_recording):
    """Part 1 (the header's) and the tail are uploaded at once, and ListParts checks the parts sent ahead beside
    them: the three calls meet at a barrier, which breaks if they come one after another. Same bytes stored."""
    from tests.test_storage_s3 import _meeting

    api, resources = s3_live
    rec = record(api, resources, big_recording)
    assert ahead_parts(resources, api, rec)
    met = _meeting(resources.provider.client, ("UploadPart", "ListParts"), 3)  # type: ignore[attr-defined]
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    assert sorted(met) == ["ListParts", "UploadPart", "UploadPart"]
    output = api.status(rec).get_json()["outputs"][0]
    live = resources.staging.output_dir(rec) / "live" / "alice.live.webm"
    assert fetch(resources.provider, output["key"]) == live.read_bytes()
    assert output["checksum"]["composite"] == composite(live.read_bytes(), PART)


def record_mp4(api: Api, resources: Resources, pieces: list[bytes]) -> str:
    """A `format: mp4` recording with live steps while it records."""
    rec = api.start(format="mp4").get_json()["recordingId"]
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        if sequence % 6 == 5:
            resources.finalizer.live.step(rec)  # type: ignore[union-attr]
    state = resources.finalizer.live.states.get(rec, "alice")  # type: ignore[union-attr]
    assert state.mp4 is not None and state.mp4.body > 2 * PART  # media written, and parts complete, while recording
    return rec


def stored_live_mp4(api: Api, resources: Resources, rec: str) -> dict:
    """Stop and finalize; check the stored MP4 is the live file byte for byte, with the checksum its bytes give
    when the first part holds the header too. Returns the output's status entry."""
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    data = fetch(resources.provider, output["key"])
    live = resources.staging.output_dir(rec) / "live" / "alice.live.mp4"
    assert data == live.read_bytes() and data[4:8] == b"ftyp"
    head = output["checksum"]["firstPartSize"] - PART
    parts = [data[:head + PART]] + [data[i:i + PART] for i in range(head + PART, len(data), PART)]
    assert output["checksum"]["composite"] == hashlib.sha256(
        b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()
    assert RedisCheckpoint(resources.redis, rec, output["key"]).load() is None
    return output


def test_a_live_mp4_sends_its_media_ahead_and_its_header_with_part_one(s3_live, big_recording):
    """`format: mp4`: parts 2, 3, ... of the finished MP4 are its media's, final while recording, so they go
    ahead; at stop part 1 goes with the header in front of it (longer than the others by the header), then the
    tail. The stored object is the live file byte for byte, and its checksum is recomputed from the bytes."""
    api, resources = s3_live
    rec = record_mp4(api, resources, big_recording)
    key = f"{object_prefix(api.room, rec)}alice.mp4"
    state = RedisCheckpoint(resources.redis, rec, key).load() or {}
    assert state.get("ahead") and sorted(p["PartNumber"] for p in state["parts"])[0] == 2
    stored_live_mp4(api, resources, rec)
