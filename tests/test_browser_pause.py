"""Host pause/resume from the demo page: the browser module follows the server's state and the output leaves the pause out."""
from __future__ import annotations

from tests.media import probe
from tests.test_browser import PAGE_SUMMARY, record_for, wait_for_phase

PAUSE_SECONDS = 3.0


def test_the_recorder_follows_a_host_pause_into_one_file(page, live_server, worker, api, room):
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    record_for(page, 3.0)
    page.click("#pause")
    page.wait_for_function("tapedeck.recorder.state === 'paused'", timeout=10_000)
    produced = page.evaluate("tapedeck.recorder.stats.produced")
    page.wait_for_timeout(PAUSE_SECONDS * 1000)
    assert page.evaluate("tapedeck.recorder.stats.produced") <= produced + 1  # nothing is made while paused
    page.click("#pause")  # now labelled Resume
    page.wait_for_function("tapedeck.recorder.state === 'recording'", timeout=10_000)
    page.wait_for_timeout(3000)
    page.click("#stop")
    assert wait_for_phase(page, "completed", "failed") == "completed", page.evaluate(PAGE_SUMMARY)
    info = page.evaluate(PAGE_SUMMARY)
    assert info["errors"] == [] and info["summary"]["failed"] == 0 and info["summary"]["dropped"] == 0, info

    body = api.status(info["recordingId"]).get_json()
    assert len(body["pauses"]) == 1 and body["pauses"][0]["resumedAt"], body["pauses"]
    assert body["participants"]["host"]["video"]["missingCount"] == 0
    result = probe(api.output_path(body, "host"))
    assert len(body["outputs"]) == 1
    expected = info["recordedSeconds"] - PAUSE_SECONDS  # the browser measured the whole span, pause included
    assert abs(result.duration - expected) <= 1.0, (result.duration, expected, info)
