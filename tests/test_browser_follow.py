"""The browser module follows the recording's pause by itself (followPause, over the event stream): a host's
pause stops MediaRecorder, nothing is made meanwhile, resume records on, and the output leaves the pause out."""
from __future__ import annotations

from tests.media import probe

PAUSE_SECONDS = 3.0

START = """async ({ token, recordingId }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const rec = (window.rec = new Recorder({ token, recordingId, participantId: "alice", stream, timeslice: 500 }));
  window.events = [];
  for (const type of ["pause", "resume", "error"]) rec.addEventListener(type, (e) => window.events.push(type));
  await rec.start();
}"""

STOP = """async () => {
  const summary = await window.rec.stop();
  window.rec.options.stream.getTracks().forEach((t) => t.stop());
  return { summary, events: window.events, recorded: (window.rec.stoppedAt - window.rec.startedAt) / 1000 };
}"""


def test_the_recorder_pauses_and_resumes_with_the_recording(page, live_server, worker, api):
    recording_id = api.start().get_json()["recordingId"]
    host = api.auth()
    page.goto(f"{live_server.url}/demo")
    page.evaluate(START, {"token": api.token("alice", "participant"), "recordingId": recording_id})
    page.wait_for_timeout(2500)
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=host).status_code == 200
    page.wait_for_function("window.rec.state === 'paused'", timeout=10_000)
    produced = page.evaluate("window.rec.stats.produced")
    page.wait_for_timeout(PAUSE_SECONDS * 1000)
    assert page.evaluate("window.rec.stats.produced") <= produced + 1  # nothing is made while paused
    assert api.client.post(f"/video-calls/{api.room}/recording/resume", headers=host).status_code == 200
    page.wait_for_function("window.rec.state === 'recording'", timeout=10_000)
    page.wait_for_timeout(2500)
    result = page.evaluate(STOP)
    assert result["events"] == ["pause", "resume"], result
    assert result["summary"]["failed"] == 0 and result["summary"]["dropped"] == 0, result

    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    got = probe(api.output_path(body, "alice"))
    expected = result["recorded"] - PAUSE_SECONDS  # the recorder's span includes the pause
    assert abs(got.duration - expected) <= 1.0, (got.duration, expected, result)
