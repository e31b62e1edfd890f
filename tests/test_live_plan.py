"""Finalize's plan on the live path (issue 15): after stop, a participant whose live output covers every chunk is
finished from the counters intake keeps, without reading the chunk index behind the live position (so stop →
completed does not grow with the recording's length); one that the live output does not cover (a late chunk below
its first) goes to batch, which reads the whole index and gives the reference output.

Watched with Redis's own MONITOR on a private server: every command the server runs on a chunk-index key."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import redis

from tests.media import Recording, encode_webm, slice_timeslice
from tests.test_live import packets
from tests.test_live_flow import batch_output, batch_packets, live_api, live_env, record, resources  # noqa: F401
from workers import keys
from workers.clock import iso
from workers.live.chunks import HEADER_BATCH

WHOLE_READS = {"HGETALL", "HSCAN", "HKEYS", "HVALS"}


class IndexCommands:
    """The commands the server runs on one stream's chunk-index key while the block runs (MONITOR), as
    (command, arguments after the key)."""

    def __init__(self, url: str, key: str) -> None:
        self.client, self.key = redis.Redis.from_url(url), key
        self.commands: list[tuple[str, list[str]]] = []
        self.marker = f"index-commands-end-{time.time_ns()}"

    def __enter__(self) -> IndexCommands:
        self.monitor = self.client.monitor().__enter__()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        return self

    def _listen(self) -> None:
        while True:
            words = self.monitor.next_command()["command"].split(" ")
            if words[0].upper() == "ECHO" and self.marker in words[1:]:
                return
            if self.key in words:
                at = words.index(self.key)
                self.commands.append((words[0].upper(), words[at + 1:]))

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.marker)
        self.thread.join(timeout=30)
        self.monitor.__exit__()
        self.client.close()


def test_live_finalize_reads_no_chunk_index_entry_behind_the_live_position(live_api, resources):  # noqa: F811
    rec, pieces = record(live_api, resources, 8, 3)
    position = resources.finalizer.live.states.get(rec, "alice").position
    assert HEADER_BATCH < position < len(pieces) - 1  # a tail is left for stop, and most chunks lie behind it
    assert live_api.stop().status_code == 202
    with IndexCommands(live_env_url(resources), keys.stream_chunks(rec, "alice", "video")) as index:
        assert resources.finalizer.run(rec) == "completed"
    body = live_api.status(rec).get_json()
    assert body["outputs"][0]["checksum"]["algorithm"] == "sha256-parts"  # the live output was used
    assert index.commands, "MONITOR saw no read of the chunk index (the final step reads the tail)"
    assert not [c for c, _ in index.commands if c in WHOLE_READS], index.commands
    behind = {int(field) for command, fields in index.commands if command in ("HGET", "HMGET")
              for field in fields if int(field) <= position}
    assert len(behind) <= HEADER_BATCH, sorted(behind)  # the header's entries only


def test_a_late_chunk_below_the_live_outputs_first_sends_the_participant_to_batch(live_api, resources,  # noqa: F811
                                                                                  tmp_path):
    """A client counting from 1 is folded live from its chunk 1; chunk 0 (a short recorder run before it) comes
    late. The counters show a lower first sequence, so the live output is not used: batch reads the whole index
    and its output (two segments) is what is stored, and the manifest lines the participant up by chunk 0."""
    rec = live_api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=8)), 24)
    started = time.time() * 1000
    for sequence, piece in enumerate(pieces, 1):
        assert live_api.put_chunk(rec, "alice", "video", sequence, piece, timestamp=started + sequence * 333).status_code == 202
        if sequence % 8 == 0:
            resources.finalizer.live.step(rec)
    live = resources.finalizer.live.states.get(rec, "alice")
    assert live.failed is None and live.windows >= 2 and live.streams["video"].first == 1, live
    early = encode_webm(replace(Recording(seconds=2), width=160, height=120))
    assert live_api.put_chunk(rec, "alice", "video", 0, early, timestamp=started - 2000).status_code == 202
    assert live_api.stop().status_code == 202
    with IndexCommands(live_env_url(resources), keys.stream_chunks(rec, "alice", "video")) as index:
        assert resources.finalizer.run(rec) == "completed"
    assert "HGETALL" in [c for c, _ in index.commands]  # batch read every entry (and MONITOR sees such reads)
    body = live_api.status(rec).get_json()
    output = body["outputs"][0]
    assert output["sha256"] and output.get("checksum") is None  # batch's whole-file hash, not the live parts
    stored = resources.provider.path_for(output["key"])  # type: ignore[attr-defined]
    assert packets(stored) == batch_packets(resources, rec, tmp_path)
    reference = batch_output(resources, rec, tmp_path)
    assert output["segments"] == 2
    for field in ("format", "durationSeconds", "method", "tracks", "segments", "mediaStartSeconds",
                  "timestampRepairs", "droppedPackets", "thumbnail"):
        assert output[field] == reference[field], field
    manifest = _manifest(resources, body)
    assert manifest["participants"]["alice"]["clientStartTimestamp"] == iso((started - 2000) / 1000)
    assert manifest["participants"]["alice"]["streams"]["video"]["firstSequence"] == 0


def live_env_url(resources) -> str:
    return resources.settings.redis_url


def _manifest(resources, body: dict) -> dict:
    import json

    path = resources.provider.path_for(f"recordings/{body['room']}/{body['recordingId']}/manifest.json")
    return json.loads(path.read_text())
