"""LIVE_FINALIZE on GCS: the output's parts that are final already are uploaded while the room records, as hidden
temporaries folded into one growing object by server-side compose; at stop finalize uploads only the header's part
and the tail, and composes the final object. Checked on the gcp-storage-emulator from the stored bytes, with real
live steps; temporaries never outlive the recording (completed, abandoned, or lost behind our back)."""
from __future__ import annotations

import logging
import threading
import uuid

import pytest

from storage_providers.gcs_compose import PARTS_MARK, ComposeUploader
from tests.conftest import Api
from tests.storage_fixtures import fetch
from tests.test_live import packets
from tests.test_live_flow import batch_packets, live_env  # noqa: F401 - live_env is a fixture, found by name
from tests.test_live_s3_ahead import (PART, big_recording, composite, record, record_mp4,  # noqa: F401 - fixture
                                      stored_live_mp4)
from workers import keys
from workers.checkpoints import RedisCheckpoint
from workers.maintenance.uploads import abort_checkpointed, abort_listed
from workers.manifest import MANIFEST_NAME, object_prefix
from workers.resources import Resources
from workers.settings import Settings


@pytest.fixture
def gcs_live(live_env, gcs_emulator):  # noqa: F811
    from app import create_app

    env = {**live_env, **gcs_emulator, "STORAGE_PART_SIZE": str(PART)}
    resources = Resources.build(Settings.from_env(env), env)
    resources.finalizer.live.part_size = PART  # type: ignore[union-attr]
    app = create_app(env)
    return Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}"), resources


def output_key(api: Api, rec: str) -> str:
    return f"{object_prefix(api.room, rec)}alice.webm"


def temporaries(resources: Resources, api: Api, rec: str) -> list[str]:
    """Every object of the recording's prefix that is a part sent ahead (what purge would see)."""
    return sorted(info.key for info in resources.provider.list(object_prefix(api.room, rec)) if PARTS_MARK in info.key)


def live_bytes(resources: Resources, rec: str) -> bytes:
    return (resources.staging.output_dir(rec) / "live" / "alice.live.webm").read_bytes()


def test_parts_go_up_while_recording_and_compose_into_the_live_output(gcs_live, big_recording, caplog):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    ahead = temporaries(resources, api, rec)
    assert ahead and all(name.startswith(output_key(api, rec) + PARTS_MARK) for name in ahead)
    state = RedisCheckpoint(resources.redis, rec, output_key(api, rec)).load()
    assert state["ahead"] and state["body"]["first"] == 2  # part 1 holds the header's space: it goes at stop
    assert [name.rsplit("/", 1)[1] for name in ahead] == ["body"]  # composed parts were deleted as they folded
    assert api.stop().status_code == 202
    with caplog.at_level(logging.INFO, logger="storage_providers.gcs_compose"):
        assert resources.finalizer.run(rec) == "completed"
    body = api.status(rec).get_json()
    output = body["outputs"][0]
    data = fetch(resources.provider, output["key"])
    assert data == live_bytes(resources, rec)
    assert output["checksum"]["composite"] == composite(data, PART)
    head = resources.provider.head(output["key"])
    assert head.metadata["sha256-parts"] == f"{PART}:{composite(data, PART)}"  # compose sets the final metadata
    assert float(head.metadata["duration-seconds"]) == pytest.approx(output["durationSeconds"], abs=0.001)
    assert temporaries(resources, api, rec) == []
    assert RedisCheckpoint(resources.redis, rec, output["key"]).load() is None
    manifest = fetch(resources.provider, object_prefix(api.room, rec) + MANIFEST_NAME).decode()
    assert PARTS_MARK not in manifest and PARTS_MARK not in str(body)  # no listing or manifest names them
    finals = [r for r in caplog.records if getattr(r, "event", "") == "gcs_compose" and r.final]
    assert len(finals) == 1 and finals[0].key == output["key"]


def test_a_live_mp4_composes_its_media_sent_ahead_behind_its_header(gcs_live, big_recording):
    """`format: mp4`: the MP4's media goes up while recording; at stop part 1 (the header and the first media)
    and the tail, then one compose, whose part digests must give the file's checksum (first part longer)."""
    api, resources = gcs_live
    rec = record_mp4(api, resources, big_recording)
    key = f"{object_prefix(api.room, rec)}alice.mp4"
    state = RedisCheckpoint(resources.redis, rec, key).load()
    assert state["ahead"] and state["body"]["first"] == 2
    output = stored_live_mp4(api, resources, rec)
    assert resources.provider.head(output["key"]).metadata["sha256-parts"].startswith(f"{PART}+")
    assert temporaries(resources, api, rec) == []


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_a_temporary_changed_behind_our_back_falls_back_to_the_whole_upload(gcs_live, big_recording, change):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    ahead = temporaries(resources, api, rec)
    assert ahead
    if change == "deleted":  # a lifecycle rule or an operator removed it
        resources.provider.delete(ahead[0])
    else:  # same name, same size, other bytes: only its generation tells
        size = resources.provider.head(ahead[0]).size
        resources.provider.upload_bytes(ahead[0], b"\0" * size, content_type="video/webm")
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    data = fetch(resources.provider, output["key"])
    assert data == live_bytes(resources, rec)
    assert output["checksum"]["composite"] == composite(data, PART)
    assert temporaries(resources, api, rec) == []


def test_a_participant_sent_to_batch_gets_its_own_upload_and_the_parts_are_deleted(gcs_live, big_recording,
                                                                                   tmp_path):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    assert temporaries(resources, api, rec)
    resources.redis.delete(keys.live_state(rec))  # the live state is lost: batch makes the output
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = api.status(rec).get_json()["outputs"][0]
    downloaded = tmp_path / "stored.webm"
    downloaded.write_bytes(fetch(resources.provider, output["key"]))
    assert packets(downloaded) == batch_packets(resources, rec, tmp_path)
    assert temporaries(resources, api, rec) == []


class Crash(BaseException):
    """The worker dies here (not an error any code catches)."""


def test_a_crash_between_compose_and_cleanup_completes_once_on_retry(gcs_live, big_recording, monkeypatch, caplog):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    discard = ComposeUploader.discard

    def crash_once(self, state):
        monkeypatch.setattr(ComposeUploader, "discard", discard)
        raise Crash()

    monkeypatch.setattr(ComposeUploader, "discard", crash_once)
    assert api.stop().status_code == 202
    with caplog.at_level(logging.INFO, logger="storage_providers.gcs_compose"), pytest.raises(Crash):
        resources.finalizer.run(rec)
    key = output_key(api, rec)
    generation = resources.provider.client.bucket(resources.provider.settings.bucket).get_blob(key).generation
    assert temporaries(resources, api, rec)  # the crash left them
    with caplog.at_level(logging.INFO, logger="storage_providers.gcs_compose"):
        assert resources.finalizer.run(rec) == "completed"  # the redelivered finalize
    assert fetch(resources.provider, key) == live_bytes(resources, rec)
    assert resources.provider.client.bucket(resources.provider.settings.bucket).get_blob(key).generation == generation
    assert len([r for r in caplog.records if getattr(r, "event", "") == "gcs_compose" and r.final]) == 1
    assert temporaries(resources, api, rec) == []


@pytest.mark.parametrize("checkpoint", ["kept", "lost"])
def test_beat_deletes_the_temporaries_of_an_abandoned_recording(gcs_live, big_recording, checkpoint):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    assert temporaries(resources, api, rec)
    assert output_key(api, rec) not in abort_checkpointed(resources.redis, resources.provider)  # still recording
    assert output_key(api, rec) not in abort_listed(resources.redis, resources.provider, 0)
    assert temporaries(resources, api, rec)
    resources.redis.hset(keys.recording(rec), "state", "failed")  # abandoned: it will never finalize
    if checkpoint == "lost":
        resources.redis.delete(keys.upload_session(rec, output_key(api, rec)))
        assert output_key(api, rec) not in abort_checkpointed(resources.redis, resources.provider)
        assert output_key(api, rec) not in abort_listed(resources.redis, resources.provider, 3600)  # too young
        assert output_key(api, rec) in abort_listed(resources.redis, resources.provider, 0)
    else:
        assert output_key(api, rec) in abort_checkpointed(resources.redis, resources.provider)
    assert temporaries(resources, api, rec) == []


def test_purge_deletes_the_temporaries_of_a_recording_that_failed_while_recording(gcs_live, big_recording):
    from workers.purge import mark_deleting, purge

    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    assert temporaries(resources, api, rec)
    resources.redis.hset(keys.recording(rec), "state", "failed")
    assert mark_deleting(resources.redis, rec)[0] == "queued"  # DELETE of the recording
    assert purge(resources.redis, resources.provider, resources.staging, rec) == api.room
    assert temporaries(resources, api, rec) == []


def meeting(monkeypatch, names: tuple[str, ...], parties: int) -> list[str]:
    """The first `parties` calls of these ComposeUploader methods wait for each other at a barrier (broken if they
    come one after another), so stop only gets through when they are in flight together. Returns who met."""
    barrier = threading.Barrier(parties, timeout=30)
    met: list[str] = []
    lock = threading.Lock()
    for name in names:
        original = getattr(ComposeUploader, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            with lock:
                waits = len(met) < parties
                if waits:
                    met.append(_name)
            if waits:
                barrier.wait()
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ComposeUploader, name, wrapped)
    return met


def test_at_stop_part_one_the_tail_and_the_checks_go_together(gcs_live, big_recording, monkeypatch):
    """Part 1 and the tail are uploaded while the body is checked; same bytes, every temporary gone."""
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    assert temporaries(resources, api, rec)
    met = meeting(monkeypatch, ("_put_part", "_unchanged"), 3)
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    assert sorted(met) == ["_put_part", "_put_part", "_unchanged"]
    output = api.status(rec).get_json()["outputs"][0]
    assert fetch(resources.provider, output["key"]) == live_bytes(resources, rec)
    assert temporaries(resources, api, rec) == []


def test_the_temporaries_are_deleted_together_after_the_compose(gcs_live, big_recording, monkeypatch):
    api, resources = gcs_live
    rec = record(api, resources, big_recording)
    met = meeting(monkeypatch, ("_delete",), 3)  # the body, part 1 and the tail at least
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    assert met == ["_delete"] * 3
    output = api.status(rec).get_json()["outputs"][0]
    assert fetch(resources.provider, output["key"]) == live_bytes(resources, rec)
    assert temporaries(resources, api, rec) == []
