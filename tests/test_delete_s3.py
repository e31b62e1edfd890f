"""The purge against the moto S3 server: every object of the recording goes, other recordings' objects stay."""
from __future__ import annotations

import json

import redis

from storage_providers import create_provider
from tests.storage_servers import moto_server  # noqa: F401 - fixture, found by name
from workers import keys
from workers.purge import purge
from workers.staging import ChunkStaging
from workers.state import RecordingStore, State


def test_purge_empties_the_bucket_prefix_and_staging(moto_server, stack_env, tmp_path, room):  # noqa: F811
    provider = create_provider("s3", moto_server)
    client = redis.Redis.from_url(stack_env["REDIS_URL"])
    store, staging = RecordingStore(client), ChunkStaging(tmp_path / "staging")
    _, rec = store.start(room, f"rec_s3del_{room}", "webm", {})
    _, other = store.start(f"{room}-other", f"rec_s3keep_{room}", "webm", {})
    base, keep = f"recordings/{room}/{rec}/", f"recordings/{room}-other/{other}/alice.webm"
    for key in (base + "alice.webm", base + "alice.jpg", base + "manifest.json", keep):
        provider.upload_bytes(key, b"bytes of " + key.encode(), content_type="application/octet-stream")
    store.update(rec, outputs=json.dumps([{"participantId": "alice", "key": base + "alice.webm",
                                           "thumbnailKey": base + "alice.jpg"}]))
    store.finish(rec, State.COMPLETED)
    staging.stage(rec, "alice", "video", 0, b"\x1a\x45\xdf\xa3chunk")
    assert purge(client, provider, staging, rec) == room
    assert list(provider.list(base)) == []
    assert provider.exists(keep)
    assert not staging.recording_dir(rec).exists()
    assert list(client.scan_iter(match=f"*{rec}*", count=1000)) == [] and client.exists(keys.recording(other))
    assert purge(client, provider, staging, rec) is None  # a second run finds nothing and fails nothing
