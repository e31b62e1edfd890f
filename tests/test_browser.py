"""The browser module and the demo page in Debian's headless Chromium, with its fake camera and microphone.

Real parts throughout: the app served over HTTP (tests/live_server.py), a real Celery worker, and the
finished file decoded with PyAV. The outage test loads the page from another origin than the API, so
every upload, status call and event stream is a real CORS request.
"""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.media import probe
from tests.services import wait_until

RECORD_SECONDS = 8.0
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PAGE_SUMMARY = """() => ({
  phase: tapedeck.phase, recordingId: tapedeck.recordingId, source: tapedeck.statusSource,
  errors: tapedeck.errors, summary: tapedeck.summary, mimeType: tapedeck.recorder && tapedeck.recorder.mimeType,
  recordedSeconds: (tapedeck.recorder.stoppedAt - tapedeck.recorder.startedAt) / 1000,
})"""


def record_for(page, seconds: float) -> None:
    page.click("#start")
    page.wait_for_function("tapedeck.phase === 'recording'", timeout=20_000)
    page.wait_for_timeout(seconds * 1000)


def wait_for_phase(page, *phases: str, timeout: float = 60) -> str:
    page.wait_for_function(f"{list(phases)!r}.includes(tapedeck.phase)", timeout=timeout * 1000)
    return page.evaluate("tapedeck.phase")


def assert_plays_whole(path: Path, recorded_seconds: float) -> None:
    """Both tracks decode, and the file lasts as long as the browser recorded (within a second)."""
    result = probe(path)
    kinds = {kind for kind, _ in result.codecs}
    assert kinds == {"audio", "video"}, result.codecs
    assert result.frames.get("video", 0) > 0 and result.frames.get("audio", 0) > 0, result.frames
    assert abs(result.duration - recorded_seconds) <= 1.0, (result.duration, recorded_seconds)
    if result.container_duration is not None:
        assert abs(result.container_duration - recorded_seconds) <= 1.0, (result.container_duration, recorded_seconds)


def test_host_records_from_the_demo_page(page, live_server, worker, api, room):
    # Without an event stream the page falls back to polling the status (the outage test uses SSE).
    page.route("**/events?*", lambda route: route.fulfill(status=404, body="no event stream"))
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    record_for(page, RECORD_SECONDS)
    page.click("#stop")
    assert wait_for_phase(page, "completed", "failed") == "completed", page.evaluate(PAGE_SUMMARY)
    info = page.evaluate(PAGE_SUMMARY)
    assert info["mimeType"].startswith("video/webm"), info
    assert info["errors"] == [] and info["summary"]["failed"] == 0 and info["summary"]["dropped"] == 0, info
    assert info["source"] == "polling", info

    body = api.status(info["recordingId"]).get_json()
    assert body["state"] == "completed"
    video = body["participants"]["host"]["video"]
    assert video["missingCount"] == 0 and video["chunks"] == info["summary"]["sent"], video
    assert_plays_whole(api.output_path(body, "host"), info["recordedSeconds"])

    # The page shows a player and a download link for the file.
    href = page.locator(".output a[download]").get_attribute("href")
    assert urlsplit(href).path == urlsplit(body["outputs"][0]["url"]).path  # signed anew by each app
    page.wait_for_function("document.querySelector('#playback').readyState >= 2", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-completed.png"), full_page=True)


def test_host_picks_mp4_on_the_demo_page(page, live_server, worker, api, room):
    """The Advanced section's format: the recording starts as MP4 and the finished file is H.264/AAC."""
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    page.click("#advanced summary")
    page.select_option("#format", "mp4")
    record_for(page, 4.0)
    page.click("#stop")
    assert wait_for_phase(page, "completed", "failed", timeout=120) == "completed", page.evaluate(PAGE_SUMMARY)
    info = page.evaluate(PAGE_SUMMARY)
    body = api.status(info["recordingId"]).get_json()
    assert body["format"] == "mp4" and body["outputs"][0]["format"] == "mp4", body
    path = api.output_path(body, "host")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert sorted(probe(path).codecs) == [("audio", "aac"), ("video", "h264")]
    assert_plays_whole(path, info["recordedSeconds"])


def test_participant_upload_survives_an_outage_from_another_origin(page, live_server, fault_proxy, worker, api, room):
    recording_id = api.start().get_json()["recordingId"]
    page.goto(f"{live_server.other_origin}/demo?room={room}&name=alice&role=participant&api={fault_proxy.url}")
    page.click("#start")
    page.wait_for_function("tapedeck.phase === 'recording' && tapedeck.recorder.stats.sent >= 2", timeout=20_000)
    started = time.monotonic()
    fault_proxy.fail_uploads(3, status=503, retry_after="1")
    fault_proxy.drop_uploads(1)
    wait_until(lambda: fault_proxy.pending_faults == 0, 15, what="the injected faults to be used up")
    page.wait_for_timeout(max(0.0, RECORD_SECONDS - 2 - (time.monotonic() - started)) * 1000)
    page.click("#stop")  # the participant leaves first; its recorder flushes every chunk
    page.wait_for_function("tapedeck.summary !== null", timeout=30_000)
    api.stop()
    assert wait_for_phase(page, "completed", "failed") == "completed", page.evaluate(PAGE_SUMMARY)
    info = page.evaluate(PAGE_SUMMARY)
    summary = info["summary"]
    assert summary["retries"] >= 3 and summary["failed"] == 0 and summary["dropped"] == 0, info
    assert info["recordingId"] == recording_id and info["source"] == "sse", info

    uploads = fault_proxy.uploads()
    failed = [r for r in uploads if r.fault]
    assert len(failed) == 4, failed
    for bad in failed:
        later = [r for r in uploads if r.sequence == bad.sequence and r.at > bad.at and r.status == 202]
        assert later, f"sequence {bad.sequence} was never uploaded after its {bad.fault}"
        if bad.fault == "status":  # Retry-After: 1 is honoured
            assert later[0].at - bad.at >= 0.9, (bad, later[0])
    assert any(r.method == "OPTIONS" for r in fault_proxy.log), "expected a CORS preflight"

    body = api.status(recording_id).get_json()
    video = body["participants"]["alice"]["video"]
    assert video["missingCount"] == 0 and video["chunks"] == summary["sent"], video
    assert_plays_whole(api.output_path(body, "alice"), info["recordedSeconds"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-participant-outage.png"), full_page=True)


RECORDER_POLICIES = """async () => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const reply = (status, body, headers = {}) => new Response(JSON.stringify(body), {
    status, headers: { "Content-Type": "application/json", ...headers } });
  const error = (code) => ({ error: { code, message: code } });
  async function run(options, answer, seconds) {
    const onWire = new Map(), calls = [], errors = [];
    let doubled = false;
    const fetch = async (url, init) => {
      const sequence = Number(url.split("/").pop());
      doubled ||= onWire.has(sequence);
      onWire.set(sequence, true);
      const attempt = calls.filter((c) => c === sequence).length;
      calls.push(sequence);
      await new Promise((r) => setTimeout(r, 30));
      onWire.delete(sequence);
      return answer(sequence, attempt);
    };
    const rec = new Recorder({ baseUrl: "", token: "t", recordingId: "rec", participantId: "p", stream,
                               timeslice: 150, fetch, ...options });
    rec.addEventListener("error", (e) => errors.push(e.detail));
    await rec.start();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const summary = await rec.stop();
    return { summary, errors, calls, doubled };
  }
  const conflictAndRetry = await run({}, (seq, attempt) =>
    seq === 1 ? reply(409, error("sequence_conflict"))
    : seq === 2 && attempt === 0 ? reply(503, error("unavailable"), { "Retry-After": "0" })
    : seq === 4 && attempt === 0 ? Promise.reject(new TypeError("Failed to fetch"))
    : reply(202, { duplicate: false }), 1.2);
  const ended = await run({}, (seq) => seq >= 3 ? reply(409, error("not_recording")) : reply(202, {}), 1.5);
  const overflow = await run({ concurrency: 1, maxQueueBytes: 1 }, (seq, attempt) =>
    seq === 0 && attempt === 0 ? reply(503, error("unavailable"), { "Retry-After": "1" }) : reply(202, {}), 1.2);
  const bodies = [];
  await run({ upload: "json", fetch: async (url, init) => {
    bodies.push({ url, method: init.method, type: init.headers["Content-Type"], body: JSON.parse(init.body) });
    return reply(202, {});
  } }, null, 0.5);
  const first = bodies.find((b) => b.body.sequence === 0);
  const magic = Array.from(atob(first.body.chunk).slice(0, 4), (c) => c.charCodeAt(0));
  stream.getTracks().forEach((t) => t.stop());
  return { conflictAndRetry, ended, overflow, json: { first: { ...first, body: { ...first.body, chunk: null } }, magic } };
}"""


def test_recorder_policies_for_errors_and_a_full_queue(page, live_server):
    """The module's documented delivery rules, against a scripted fetch (no server involved)."""
    page.goto(f"{live_server.url}/demo")
    result = page.evaluate(RECORDER_POLICIES)

    conflict = result["conflictAndRetry"]
    assert not conflict["doubled"]
    assert [e["code"] for e in conflict["errors"]] == ["sequence_conflict"] and conflict["errors"][0]["sequence"] == 1
    calls = conflict["calls"]
    assert (calls.count(1), calls.count(2), calls.count(4)) == (1, 2, 2), calls  # a network error is retried too
    s = conflict["summary"]
    assert (s["failed"], s["retries"], s["sent"], s["queued"]) == (1, 2, s["produced"] - 1, 0), s

    ended = result["ended"]
    assert ended["summary"]["ended"] is True
    assert [e["code"] for e in ended["errors"]] == ["not_recording"], ended["errors"]
    assert ended["summary"]["sent"] == 3 and ended["summary"]["queued"] == 0, ended["summary"]
    assert ended["summary"]["sent"] + ended["summary"]["dropped"] == ended["summary"]["produced"], ended["summary"]

    overflow = result["overflow"]
    s = overflow["summary"]
    dropped = [e["sequence"] for e in overflow["errors"] if e["code"] == "queue_full"]
    assert dropped and 0 not in dropped and s["dropped"] == len(dropped), overflow["errors"]
    assert overflow["calls"].count(0) == 2, overflow["calls"]  # the header survived and was retried
    assert s["sent"] + s["dropped"] == s["produced"] and s["failed"] == 0, s

    first = result["json"]["first"]  # the base64 fallback: the header chunk's bytes survive the data URL
    assert (first["url"], first["method"], first["type"]) == ("/video-calls/chunks/upload", "POST", "application/json")
    assert {k: first["body"][k] for k in ("recordingId", "participantId", "type", "sequence")} == \
        {"recordingId": "rec", "participantId": "p", "type": "video", "sequence": 0}
    assert result["json"]["magic"] == [0x1A, 0x45, 0xDF, 0xA3]


def test_demo_routes_and_the_module_are_served(live_server):
    client = live_server.app.test_client()
    assert client.get("/").headers["Location"].endswith("/demo")
    page = client.get("/demo")
    assert page.status_code == 200 and b'src="/static/demo.js"' in page.data
    module = client.get("/static/tapedeck-recorder.js")
    assert module.status_code == 200 and "javascript" in module.content_type
    assert b"export class Recorder extends EventTarget" in module.data


def test_dev_token_route_exists_only_in_development(live_server, stack_env):
    import jwt

    client = live_server.app.test_client()
    reply = client.post("/dev/token", json={"room": "r1", "sub": "alice", "role": "participant"})
    assert reply.status_code == 200
    claims = jwt.decode(reply.get_json()["token"], stack_env["JWT_SECRET"], algorithms=["HS256"])
    assert (claims["room"], claims["sub"], claims["role"]) == ("r1", "alice", "participant")
    assert client.post("/dev/token", json={"room": "bad room", "sub": "a"}).status_code == 400

    from app import create_app

    production = create_app({**stack_env, "TAPEDECK_ENV": "production"}).test_client()
    reply = production.post("/dev/token", json={"room": "r1", "sub": "alice", "role": "host"})
    assert reply.status_code == 404 and reply.get_json()["error"]["code"] == "not_found"
    assert production.get("/demo").status_code == 200  # the page itself works everywhere (paste a token)


def test_cors_allows_only_configured_origins(live_server):
    client = live_server.app.test_client()
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers":
                 "authorization,content-type,tapedeck-timestamp,repr-digest,content-digest"}
    path = "/video-calls/recordings/rec_x/participants/alice/video/chunks/0"
    allowed = client.options(path, headers={"Origin": live_server.other_origin, **preflight})
    assert allowed.headers.get("Access-Control-Allow-Origin") == live_server.other_origin
    assert "PUT" in allowed.headers.get("Access-Control-Allow-Methods", "")
    assert "tapedeck-timestamp" in allowed.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "repr-digest" in allowed.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "content-digest" in allowed.headers.get("Access-Control-Allow-Headers", "").lower()
    denied = client.options(path, headers={"Origin": "http://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in denied.headers
    status = client.get("/video-calls/recordings/rec_x", headers={"Origin": live_server.other_origin})
    assert status.headers.get("Access-Control-Allow-Origin") == live_server.other_origin
    assert "Retry-After" in status.headers.get("Access-Control-Expose-Headers", "")
