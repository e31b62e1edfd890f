"""The browser module follows the recording's pause by itself (followPause, over the event stream): a host's
pause stops MediaRecorder, nothing is made meanwhile, resume records on, and the output leaves the pause out."""
from __future__ import annotations

from tests.media import probe
from tests.recorder_page import host_says, start_recorder, stop_and_finalize

PAUSE_SECONDS = 3.0


def test_the_recorder_pauses_and_resumes_with_the_recording(page, live_server, worker, api):
    recording_id = start_recorder(page, live_server, api)
    page.wait_for_timeout(2500)
    host_says(api, "pause")
    page.wait_for_function("window.rec.state === 'paused'", timeout=10_000)
    produced = page.evaluate("window.rec.stats.produced")
    page.wait_for_timeout(PAUSE_SECONDS * 1000)
    assert page.evaluate("window.rec.stats.produced") <= produced + 1  # nothing is made while paused
    host_says(api, "resume")
    page.wait_for_function("window.rec.state === 'recording'", timeout=10_000)
    page.wait_for_timeout(2500)
    result, body = stop_and_finalize(page, api, recording_id)
    assert result["events"] == ["pause", "resume"], result
    got = probe(api.output_path(body, "alice"))
    expected = result["recorded"] - PAUSE_SECONDS  # the recorder's span includes the pause
    assert abs(got.duration - expected) <= 1.0, (got.duration, expected, result)
