"""LIVE_FINALIZE through the API: chunk intake queues live steps, the status shows the live position, and
finalize uploads the live output (equal to the batch file) or, when the live state is gone, the batch one.

Own Redis, so no other worker of the session finalizes these recordings; steps and finalize run in-process."""
from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api
from tests.media import Recording, encode_fmp4, encode_webm, slice_timeslice
from tests.services import RedisServer
from tests.test_live import packets
from workers import keys
from workers.media.muxer import StreamInput, mux_participant
from workers.resources import Resources
from workers.settings import Settings


@pytest.fixture(scope="module")
def live_env(stack_env, tmp_path_factory, staging_backend):
    if staging_backend != "local":
        pytest.skip("live finalize folds chunks on local staging only (object-store staging goes to batch)")
    root = tmp_path_factory.mktemp("live")
    server = RedisServer(root / "redis", appendonly=True)
    yield {**stack_env, "REDIS_URL": server.url, "LIVE_FINALIZE": "true", "LIVE_STEP_SECONDS": "1",
           "STAGING_DIR": str(root / "staging"), "LOCAL_STORAGE_DIR": str(root / "recordings")}
    server.stop()


@pytest.fixture(scope="module")
def resources(live_env) -> Resources:
    return Resources.build(Settings.from_env(live_env), live_env)


@pytest.fixture
def live_api(live_env):
    from app import create_app

    app = create_app(live_env)
    return Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")


def record(api: Api, resources: Resources, seconds: float, steps: int) -> tuple[str, list[bytes]]:
    rec = api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=seconds)), round(seconds * 3))
    per_step = len(pieces) // steps
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        if sequence % per_step == per_step - 1:
            resources.finalizer.live.step(rec)  # what tapedeck.live_step runs on the live queue
    return rec, pieces


def batch_packets(resources: Resources, rec: str, tmp_path) -> list[tuple]:
    chunks = resources.store.chunks(rec, "alice", "video")
    paths = resources.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in sorted(chunks.items())])
    return packets(mux_participant([StreamInput("video", paths)], tmp_path, "batch").path)  # type: ignore[arg-type]


def batch_output(resources: Resources, rec: str, tmp_path) -> dict:
    """The output entry batch finalize would record for these chunks (bytes, key and checksum aside)."""
    from workers.outputs import prepare_output
    from workers.records import OutputThumbnail, StoredOutput

    chunks = resources.store.chunks(rec, "alice", "video")
    paths = resources.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in sorted(chunks.items())])
    settings = resources.settings
    out = prepare_output([StreamInput("video", paths)], tmp_path / "reference", "alice", "webm",  # type: ignore[list-item]
                         mp4=settings.mp4, thumbnail_offset=settings.thumbnail_offset_seconds,
                         thumbnail_width=settings.thumbnail_width)
    return StoredOutput(
        participant_id="alice", format=out.format, bytes=out.bytes, duration_seconds=round(out.duration_seconds, 3),
        provider="", key="", sha256="", method=out.method, tracks=out.tracks, segments=out.segments,
        media_start_seconds=out.start_seconds, timestamp_repairs=out.timestamp_repairs,
        dropped_packets=out.dropped_packets, thumbnail_key=None,
        thumbnail=OutputThumbnail(out.thumbnail.width, out.thumbnail.height, out.thumbnail.seconds) if out.thumbnail else None,
    ).to_json()


def test_live_output_is_uploaded_and_equals_batch(live_api, resources, tmp_path):
    rec, pieces = record(live_api, resources, 8, 3)
    assert resources.redis.exists(keys.live_due(rec))  # intake queued a step
    live = live_api.status(rec).get_json()["live"]
    assert live is not None and 0 < live["position"] < len(pieces) - 1 and live["lagSeconds"] >= 0
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    body = live_api.status(rec).get_json()
    stored = resources.provider.path_for(body["outputs"][0]["key"])  # type: ignore[attr-defined]
    live_file = resources.staging.output_dir(rec) / "live" / "alice.live.webm"
    assert stored.read_bytes() == live_file.read_bytes()  # the live output is what was uploaded
    assert packets(stored) == batch_packets(resources, rec, tmp_path)
    assert body["outputs"][0]["durationSeconds"] == pytest.approx(8.0, abs=0.05)
    reference = batch_output(resources, rec, tmp_path)  # what the manifest says about the file, as batch has it
    for field in ("format", "durationSeconds", "method", "tracks", "segments", "mediaStartSeconds",
                  "timestampRepairs", "droppedPackets", "thumbnail"):
        assert body["outputs"][0][field] == reference[field], field
    assert resources.finalizer.live.states.get(rec, "alice").position == len(pieces) - 1


def test_a_safari_recording_is_finalized_from_its_live_output(live_api, resources, tmp_path):
    """Fragmented MP4 (H.264/AAC, as Safari's MediaRecorder writes it) through intake, steps and finalize: the
    stored file is the live Matroska output, with batch's packets, and the manifest says what batch's would."""
    rec = live_api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_fmp4(Recording(seconds=8, keyframe_seconds=1.0)), 24)
    for sequence, piece in enumerate(pieces):
        assert live_api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        if sequence % 8 == 7:
            resources.finalizer.live.step(rec)
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    body = live_api.status(rec).get_json()
    output = body["outputs"][0]
    stored = resources.provider.path_for(output["key"])  # type: ignore[attr-defined]
    assert stored.read_bytes() == (resources.staging.output_dir(rec) / "live" / "alice.live.mkv").read_bytes()
    assert output["checksum"]["algorithm"] == "sha256-parts"  # the live output's part digests, not a batch file's
    assert packets(stored) == batch_packets(resources, rec, tmp_path)
    reference = batch_output(resources, rec, tmp_path)
    for field in ("format", "durationSeconds", "method", "tracks", "segments", "mediaStartSeconds",
                  "timestampRepairs", "droppedPackets", "thumbnail"):
        assert output[field] == reference[field], field
    assert resources.finalizer.live.states.get(rec, "alice").windows >= 3


def test_lost_live_state_falls_back_to_batch(live_api, resources, tmp_path):
    rec, _ = record(live_api, resources, 6, 2)
    resources.redis.delete(keys.live_state(rec))  # Redis restarted without it, or another node stepped
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    body = live_api.status(rec).get_json()
    path = resources.provider.path_for(body["outputs"][0]["key"])  # type: ignore[attr-defined]
    assert packets(path) == batch_packets(resources, rec, tmp_path)
    assert resources.finalizer.live.states.get(rec, "alice") is None  # nothing was folded at stop


@pytest.mark.parametrize("server", ["moto_server", "gcs_emulator"], ids=["s3", "gcs"])
def test_live_output_goes_to_object_storage(live_env, request, server, tmp_path):
    """With S3 (moto) or GCS (the emulator) as the provider, the live output is what finalize uploads."""
    from app import create_app
    from tests.storage_fixtures import fetch

    env = {**live_env, **request.getfixturevalue(server), "S3_PREFIX": f"live-{uuid.uuid4().hex[:8]}"}
    resources = Resources.build(Settings.from_env(env), env)
    app = create_app(env)
    api = Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")
    rec, _ = record(api, resources, 8, 3)
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    downloaded = tmp_path / "stored.webm"
    downloaded.write_bytes(fetch(resources.provider, api.status(rec).get_json()["outputs"][0]["key"]))
    assert downloaded.read_bytes() == (resources.staging.output_dir(rec) / "live" / "alice.live.webm").read_bytes()
    assert packets(downloaded) == batch_packets(resources, rec, tmp_path)
