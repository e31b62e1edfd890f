"""A job is findable in Flower: the Procfile's flower (production, basic auth) watching the session's worker lists
the finalize of a recording with `room=<room> recording=<id>` as its arguments, and finds it by the room."""
from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse

import pytest

from tests.media import Recording, encode_webm, slice_timeslice
from tests.procfile import answers, http, minimal_env, procfile_command
from tests.services import ROOT, free_port, wait_until

pytestmark = pytest.mark.timeout(180)
AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}


@pytest.fixture
def flower(tmp_path, stack_env, worker):
    port = free_port()
    env = minimal_env(tmp_path, REDIS_URL=stack_env["REDIS_URL"], FLOWER_PORT=str(port),
                      FLOWER_BASIC_AUTH="ops:s3cret")
    process = subprocess.Popen(["bash", "-c", procfile_command("flower")], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or answers(f"{base}/healthcheck"), 60, what="flower")
        assert process.poll() is None, process.stderr.read().decode(errors="replace")
        wait_until(lambda: _workers(base), 30, interval=0.5, what="flower to see the worker")
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=30)


def _workers(base: str) -> bool:
    status, body, _ = http("GET", f"{base}/api/workers?refresh=1", headers=AUTH)
    return status == 200 and bool(json.loads(body or b"{}"))


def _tasks(base: str, **query: str) -> dict:
    status, body, _ = http("GET", f"{base}/api/tasks?{urllib.parse.urlencode(query)}", headers=AUTH)
    assert status == 200
    return json.loads(body)


def test_a_finalize_is_listed_by_recording_and_room(api, rec, flower):
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
    task_id = api.stop().get_json()["taskId"]
    assert api.wait_final(rec)["state"] == "completed"

    def finished():
        task = _tasks(flower).get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(finished, 30, interval=0.5, what="flower to record the finalize")
    assert task["name"] == "tapedeck.finalize_recording"
    assert task["args"] == f"room={api.room} recording={rec}"
    assert list(_tasks(flower, search=api.room, taskname="tapedeck.finalize_recording")) == [task_id]
