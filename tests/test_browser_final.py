"""stop() declares each stream's last chunk (Tapedeck-Final on the PUT, final in JSON): the server records it as
the stream's final sequence, refuses anything above it, and the recording completes as one whole file."""
from __future__ import annotations

from tests.media import probe

RECORD = """async ({ token, recordingId, seconds }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const microphone = new MediaStream(camera.getAudioTracks().map((t) => t.clone()));
  const common = { token, recordingId, participantId: "alice", timeslice: 400 };
  const video = new Recorder({ ...common, stream: camera });
  const audio = new Recorder({ ...common, stream: microphone, type: "audio", upload: "json" });
  const errors = [];
  for (const rec of [video, audio]) rec.addEventListener("error", (e) => errors.push(e.detail));
  await Promise.all([video.start(), audio.start()]);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const [v, a] = await Promise.all([video.stop(), audio.stop()]);
  camera.getTracks().forEach((t) => t.stop());
  microphone.getTracks().forEach((t) => t.stop());
  return { video: v, audio: a, errors, next: video.nextSequence };
}"""


def test_stop_declares_the_last_chunk_of_each_stream(page, live_server, worker, api):
    recording_id = api.start().get_json()["recordingId"]
    page.goto(f"{live_server.url}/demo")
    result = page.evaluate(RECORD, {"token": api.token("alice", "participant"), "recordingId": recording_id,
                                    "seconds": 2.5})
    assert result["errors"] == [], result
    for kind in ("video", "audio"):
        assert result[kind]["failed"] == 0 and result[kind]["queued"] == 0 and result[kind]["sent"] >= 3, result

    status = api.status(recording_id).get_json()
    for kind in ("video", "audio"):
        stream = status["participants"]["alice"][kind]
        assert stream["finalSequence"] == stream["lastSequence"] == result[kind]["sent"] - 1, stream
    late = api.put_chunk(recording_id, "alice", "video", result["next"], b"\x00" * 16)
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "sequence_conflict", late.get_json()

    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    got = probe(api.output_path(body, "alice"))
    assert {kind for kind, _ in got.codecs} == {"audio", "video"} and got.duration >= 2.0, got
