"""Live outputs carry part checksums computed while the room records (no whole-file SHA-256 after stop), and the
local provider stores them in place (a hard link renamed to the key) or, across filesystems, copies and checks
the copy against them. Checked from the stored bytes, recomputed here with hashlib alone."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from storage_providers.base import ChecksumMismatchError
from storage_providers.local import LocalSettings, LocalStorage
from tests.conftest import Api
from tests.test_live_flow import live_env, record  # noqa: F401 - live_env is a fixture, found by name
from workers.live.checksum import PART_SIZE, PartChecksum
from workers.live.output import RESERVED_BYTES
from workers.manifest import MANIFEST_NAME, object_prefix
from workers.resources import Resources
from workers.settings import Settings

SMALL_PART = 16 * 1024
"""Small parts, so an 8-second test recording has parts hashed ahead, past the 64 KiB header space."""


def composite(data: bytes, part_size: int) -> str:
    """What a reader computes from downloaded bytes: SHA-256 per part, then SHA-256 over the digests."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


@pytest.fixture
def other_fs(tmp_path):
    """A folder on tmpfs, another filesystem than the test's tmp dir (a hard link across them fails)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to store on")
    folder = shm / f"tapedeck-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def resources(live_env) -> Resources:  # noqa: F811
    built = Resources.build(Settings.from_env(live_env), live_env)
    built.finalizer.live.part_size = SMALL_PART  # type: ignore[union-attr]
    return built


@pytest.fixture
def live_api(live_env):  # noqa: F811
    from app import create_app

    app = create_app(live_env)
    return Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")


def live_file(resources: Resources, rec: str) -> Path:
    return resources.staging.output_dir(rec) / "live" / "alice.live.webm"


def test_live_output_has_part_checksums_that_match_its_stored_bytes(live_api, resources):
    rec, _ = record(live_api, resources, 8, 3)
    ahead = (live_file(resources, rec).with_suffix(".parts")).read_bytes()
    first_ahead = RESERVED_BYTES // SMALL_PART
    assert len(ahead) // 32 > first_ahead + 1  # parts past the header space were hashed while recording
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"

    output = live_api.status(rec).get_json()["outputs"][0]
    stored = resources.provider.path_for(output["key"])  # type: ignore[attr-defined]
    data = stored.read_bytes()
    assert data == live_file(resources, rec).read_bytes()
    assert output["sha256"] is None
    assert output["checksum"] == {"algorithm": "sha256-parts", "partSize": SMALL_PART,
                                  "parts": -(-len(data) // SMALL_PART), "composite": composite(data, SMALL_PART)}
    ahead_digests = [ahead[i:i + 32] for i in range(first_ahead * 32, len(ahead) - 32, 32)]
    assert ahead_digests == [hashlib.sha256(data[i * SMALL_PART:(i + 1) * SMALL_PART]).digest()
                             for i in range(first_ahead, len(ahead) // 32 - 1)]  # the ahead digests are the file's

    manifest = json.loads(resources.provider.path_for(object_prefix(live_api.room, rec) + MANIFEST_NAME).read_text())  # type: ignore[attr-defined]
    assert manifest["outputs"][0]["checksum"] == output["checksum"]
    assert resources.provider.head(output["key"]).metadata["sha256-parts"] == f"{SMALL_PART}:{composite(data, SMALL_PART)}"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    assert composite(bytes(flipped), SMALL_PART) != output["checksum"]["composite"]  # a reader detects a flipped byte

    # stored in place: the key is a hard link of the closed live file, no copy was made
    assert stored.stat().st_ino == live_file(resources, rec).stat().st_ino


def test_a_byte_changed_after_it_was_hashed_is_caught_on_copy(live_api, resources, other_fs):
    """The middle parts are not read again at stop: a byte flipped on disk after its part was hashed makes the
    checksum disagree with the bytes, and a copy (storage on another filesystem) refuses to store them."""
    rec, _ = record(live_api, resources, 8, 3)
    path = live_file(resources, rec)
    with open(path, "r+b") as handle:
        handle.seek(RESERVED_BYTES + SMALL_PART + 10)  # inside a part hashed ahead
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    live = resources.finalizer.live
    assert live is not None
    assert live_api.stop().status_code == 202
    prepared = live.finish(resources.store.get(rec) or {}, "alice", ["video"])  # finalize's hook, at stop
    assert prepared is not None and prepared.checksum is not None
    data = prepared.path.read_bytes()
    assert prepared.checksum.composite != composite(data, SMALL_PART)

    provider = LocalStorage(LocalSettings.from_env({"LOCAL_STORAGE_DIR": str(other_fs)}))
    with pytest.raises(ChecksumMismatchError, match="part checksum"):
        provider.upload_file("recordings/r/x.webm", prepared.path, content_type="video/webm",
                             metadata={"sha256-parts": prepared.checksum.metadata()})
    assert not (other_fs / "recordings/r/x.webm").exists()
    assert [p.name for p in (other_fs / "recordings/r").iterdir()] == []  # no partial file left


@pytest.mark.parametrize("where", ["same", "other"])
def test_local_provider_stores_parted_outputs_whole_and_atomically(tmp_path, request, where):
    """Same filesystem: a hard link renamed into place; another filesystem: a verified copy. Either way the key
    shows nothing until the whole file is there, and holds the same bytes."""
    source = tmp_path / "staging" / "a.live.webm"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * SMALL_PART + 123))
    checksum = PartChecksum(SMALL_PART, [hashlib.sha256(source.read_bytes()[i:i + SMALL_PART]).digest()
                                         for i in range(0, source.stat().st_size, SMALL_PART)])
    root = tmp_path / "recordings" if where == "same" else request.getfixturevalue("other_fs")
    provider = LocalStorage(LocalSettings.from_env({"LOCAL_STORAGE_DIR": str(root)}))
    target = provider.path_for("recordings/r/a.webm")
    seen: list[bool] = []
    provider.upload_file("recordings/r/a.webm", source, content_type="video/webm",
                         metadata={"sha256-parts": checksum.metadata()},
                         progress=lambda sent, total: seen.append(target.exists()))
    assert seen and not any(seen)  # never visible while being stored
    assert target.read_bytes() == source.read_bytes()
    assert (target.stat().st_ino == source.stat().st_ino) == (where == "same")
    assert provider.head("recordings/r/a.webm").metadata["sha256-parts"] == checksum.metadata()
    assert [p.name for p in target.parent.iterdir()] == ["a.webm"]


def test_default_parts_leave_the_header_space_to_the_first_part():
    assert PART_SIZE == 8 * 1024 * 1024 and PART_SIZE % RESERVED_BYTES == 0
