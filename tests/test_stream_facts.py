"""The status' stream facts, kept at intake: where a stream starts, its holes in any arrival order, the capped
missing list, and a status read that never touches the per-chunk index (issue 9 items 7 and 13)."""
from __future__ import annotations

import redis

from tests.test_trust import pieces, start  # noqa: F401 - the module-scoped media fixture and the start helper


# 13. A client that counts from 1 -------------------------------------------------------------------------

def test_stream_counted_from_one_has_no_false_hole(api, worker, pieces):
    recording_id = start(api)
    for sequence, piece in enumerate(pieces, start=1):
        assert api.post_chunk(recording_id, "alice", "video", sequence, piece, timestamp=1234567890 + sequence).status_code == 202
    live = api.status(recording_id).get_json()["participants"]["alice"]["video"]
    assert (live["firstSequence"], live["missing"], live["missingCount"]) == (1, [], 0), live
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    video = body["participants"]["alice"]["video"]
    assert (video["firstSequence"], video["lastSequence"], video["missing"], video["missingCount"]) == (1, 4, [], 0)


def test_lost_first_chunks_below_a_headerless_lowest_are_missing(api, pieces):
    recording_id = start(api)
    for sequence in (2, 3):
        assert api.put_chunk(recording_id, "alice", "video", sequence, pieces[sequence]).status_code == 202
    video = api.status(recording_id).get_json()["participants"]["alice"]["video"]
    assert (video["missing"], video["missingCount"], video["chunks"]) == ([0, 1], 2, 2), video
    assert api.put_chunk(recording_id, "alice", "video", 0, pieces[0]).status_code == 202
    video = api.status(recording_id).get_json()["participants"]["alice"]["video"]
    assert (video["firstSequence"], video["missing"], video["missingCount"]) == (0, [1], 1), video


def test_holes_are_tracked_as_chunks_arrive_in_any_order(api, pieces):
    recording_id = start(api)
    order = [0, 9, 5, 3, 7, 4, 20, 8]
    for sequence in order:
        data = pieces[0] if sequence == 0 else b"mid-stream bytes %d" % sequence
        assert api.put_chunk(recording_id, "alice", "video", sequence, data).status_code == 202
    video = api.status(recording_id).get_json()["participants"]["alice"]["video"]
    expected = sorted(set(range(21)) - set(order))
    assert video["missing"] == expected and video["missingCount"] == len(expected), video
    assert (video["firstSequence"], video["lastSequence"], video["chunks"]) == (0, 20, len(order))


def test_missing_list_is_capped_but_counted(api, pieces):
    recording_id = start(api)
    for sequence in (0, 5000):
        data = pieces[0] if sequence == 0 else b"late"
        assert api.put_chunk(recording_id, "alice", "video", sequence, data).status_code == 202
    video = api.status(recording_id).get_json()["participants"]["alice"]["video"]
    assert video["missing"] == list(range(1, 1001)) and video["missingCount"] == 4999


# 7. Status cost does not grow with the chunk count --------------------------------------------------------

def test_status_reads_no_per_chunk_structure(api, app, pieces):
    """Redis' own MONITOR: a status read never touches the chunk index (whose size is the chunk count)."""
    from app.services import services
    from workers import keys

    from workers.state import ChunkRecord

    recording_id = start(api)
    with app.app_context():  # 300 chunks through the intake's own commit (HTTP would meet the rate limit)
        store = services().store
        for sequence in range(300):
            if sequence != 150:
                record = ChunkRecord(digest=f"{sequence:064x}", size=10, timestamp=None, name=f"{sequence}.chunk")
                assert store.accept_chunk(recording_id, "alice", "video", sequence, record, container_ok=True,
                                          header=sequence == 0)[0] == "stored"
    with app.app_context():
        client = services().redis
    seen = monitored(client, lambda: api.status(recording_id).get_json())
    body, commands = seen
    assert body["participants"]["alice"]["video"]["missing"] == [150]
    assert body["participants"]["alice"]["video"]["chunks"] == 299
    index_key = keys.stream_chunks(recording_id, "alice", "video")
    assert commands and not [c for c in commands if index_key in c], commands


def monitored(client: redis.Redis, action):
    """(action's result, every command Redis ran meanwhile), from Redis' own MONITOR."""
    import threading

    commands: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                if "tapedeck-monitor-end" in entry["command"]:
                    break
                commands.append(entry["command"])
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    ready.wait(5)
    result = action()
    client.echo("tapedeck-monitor-end")
    done.wait(10)
    return result, commands
