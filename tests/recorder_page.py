"""The browser module (static/tapedeck-recorder.js) driven on /demo by the pause tests: alice's Recorder on Chromium's
fake camera and microphone, started, paused and resumed by the host over the API, then stopped and finalized."""
from __future__ import annotations

START = """async ({ token, recordingId, options }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const rec = (window.rec = new Recorder({ token, recordingId, participantId: "alice", stream, timeslice: 500,
                                           ...options }));
  window.events = [];
  for (const type of ["pause", "resume", "error"]) rec.addEventListener(type, (e) => window.events.push(type));
  await rec.start();
}"""

STOP = """async () => {
  const summary = await window.rec.stop();
  window.rec.options.stream.getTracks().forEach((t) => t.stop());
  return { summary, events: window.events, state: window.rec.state,
           recorded: (window.rec.stoppedAt - window.rec.startedAt) / 1000 };
}"""


def start_recorder(page, live_server, api, **options) -> str:
    """Starts a recording and alice's Recorder for it (`options` added to the Recorder's); the recording's id."""
    recording_id = api.start().get_json()["recordingId"]
    page.goto(f"{live_server.url}/demo")
    page.evaluate(START, {"token": api.token("alice", "participant"), "recordingId": recording_id, "options": options})
    return recording_id


def host_says(api, action: str) -> None:
    """The host pauses or resumes the room's recording."""
    reply = api.client.post(f"/video-calls/{api.room}/recording/{action}", headers=api.auth())
    assert reply.status_code == 200, reply.get_json()


def stop_and_finalize(page, api, recording_id: str) -> tuple[dict, dict]:
    """Stops the Recorder (nothing failed or dropped) and then the recording; the Recorder's result (summary, events,
    state, seconds recorded) and the completed recording's status, alice's video without a missing chunk."""
    result = page.evaluate(STOP)
    assert result["summary"]["failed"] == 0 and result["summary"]["dropped"] == 0, result
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    return result, body
