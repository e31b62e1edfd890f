"""A browser client that keeps recording through a pause (followPause: false, as an app that ignores pauses
would): the server cuts the paused media at finalize, and the file is one piece without the pause. Chromium
sends a keyframe only every ~100 frames, so this also shows the video after the cut is bridged, not frozen."""
from __future__ import annotations

from datetime import datetime

from tests.media import probe

PAUSE_SECONDS = 3.0

START = """async ({ token, recordingId }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const rec = (window.rec = new Recorder({ token, recordingId, participantId: "alice", stream, timeslice: 500,
                                           followPause: false }));
  await rec.start();
}"""

STOP = """async () => {
  const summary = await window.rec.stop();
  window.rec.options.stream.getTracks().forEach((t) => t.stop());
  return { summary, state: window.rec.state, recorded: (window.rec.stoppedAt - window.rec.startedAt) / 1000 };
}"""


def test_media_recorded_through_a_pause_is_cut_by_the_server(page, live_server, worker, api):
    recording_id = api.start().get_json()["recordingId"]
    host = api.auth()
    page.goto(f"{live_server.url}/demo")
    page.evaluate(START, {"token": api.token("alice", "participant"), "recordingId": recording_id})
    page.wait_for_timeout(2500)
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=host).status_code == 200
    page.wait_for_timeout(PAUSE_SECONDS * 1000)
    assert api.client.post(f"/video-calls/{api.room}/recording/resume", headers=host).status_code == 200
    page.wait_for_timeout(2500)
    result = page.evaluate(STOP)
    assert result["summary"]["failed"] == 0 and result["summary"]["dropped"] == 0, result

    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    paused = seconds_between(body["pauses"][0]["pausedAt"], body["pauses"][0]["resumedAt"])
    got = probe(api.output_path(body, "alice"))
    assert abs(got.duration - (result["recorded"] - paused)) <= 0.25, (got.duration, paused, result)
    assert got.decode_errors == 0
    assert abs(got.ends["audio"] - got.ends["video"]) <= 0.15, got.ends  # video goes on after the cut (bridged)
    times = sorted(got.video_times)
    assert max(b - a for a, b in zip(times, times[1:])) <= 0.2  # and is not frozen until a keyframe


def seconds_between(start: str, end: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
