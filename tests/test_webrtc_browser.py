"""The WebRTC ingest from Debian's headless Chromium (fake camera and microphone, loopback ICE): the page sends its
media with /static/tapedeck-webrtc.js, the host stops over HTTP, the real worker finalizes, PyAV decodes the file."""
from __future__ import annotations

import time

import av
import pytest

from app.auth import mint_token
from tests.conftest import JWT_SECRET
from tests.test_webrtc_recording import assert_throughout, decoded

pytestmark = pytest.mark.timeout(240)

CONNECT = """async ([room, token]) => {
  const { WebRtcPeer } = await import('/static/tapedeck-webrtc.js');
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  window.peer = new WebRtcPeer({ room, token, stream });
  window.peerErrors = [];
  peer.addEventListener('error', e => peerErrors.push(e.detail));
  await peer.connect();
  return peer.state;
}"""


def host(server, room: str, action: str) -> dict:
    token = mint_token(JWT_SECRET, room, "host", "host")
    reply = server.request("POST", f"/video-calls/{room}/recording/{action}", {"Authorization": f"Bearer {token}"})
    assert reply.status in (201, 202), reply.body
    return reply.json()


def test_chromium_peer_is_recorded(page, live_gunicorn, worker, api, room) -> None:
    page.goto(f"{live_gunicorn.url}/healthz")  # the server's origin: a secure context on 127.0.0.1
    started = host(live_gunicorn, room, "start")
    assert page.evaluate(CONNECT, [room, mint_token(JWT_SECRET, room, "erin", "participant")]) == "connected"
    began = time.monotonic()
    page.wait_for_timeout(6000)
    sent = time.monotonic() - began  # media flowed from the connection to the stop call
    host(live_gunicorn, room, "stop")
    page.wait_for_timeout(1500)
    page.evaluate("peer.close()")
    assert page.evaluate("peerErrors") == []

    body = api.wait_final(started["recordingId"], timeout=90)
    assert body["state"] == "completed", body
    stream = body["participants"]["erin"]["video"]
    assert stream["missingCount"] == 0 and stream.get("finalSequence") == stream["lastSequence"], stream
    path = api.output_path(body, "erin")
    video, audio, duration = decoded(path)
    assert abs(duration - sent) <= 1.0, (duration, sent)  # the key frame wait at the start costs a few frames
    assert_throughout(video, duration, "video")
    assert_throughout(audio, duration, "audio")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        assert container.streams.audio[0].codec_context.name == "opus"


def test_chromium_gets_a_clear_error_for_a_foreign_token(page, live_gunicorn, room) -> None:
    page.goto(f"{live_gunicorn.url}/healthz")
    error = page.evaluate("""async ([room, token]) => {
      const { WebRtcPeer } = await import('/static/tapedeck-webrtc.js');
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      try { await new WebRtcPeer({ room, token, stream }).connect(); return null; }
      catch (e) { return { code: e.code, message: e.message }; }
    }""", [room, mint_token(JWT_SECRET, "another-room", "erin", "participant")])
    assert error["code"] == "forbidden" and error["message"]


def test_demo_page_records_in_webrtc_mode(page, live_gunicorn, worker, api, room) -> None:
    page.goto(f"{live_gunicorn.url}/demo?room={room}&name=host&role=host&upload=webrtc")
    page.click("#start")
    page.wait_for_function("tapedeck.phase === 'recording'", timeout=30_000)
    page.wait_for_timeout(5000)
    page.click("#stop")
    page.wait_for_function("['completed', 'failed'].includes(tapedeck.phase)", timeout=90_000)
    info = page.evaluate("({phase: tapedeck.phase, id: tapedeck.recordingId, errors: tapedeck.errors})")
    assert info["phase"] == "completed" and info["errors"] == [], info
    body = api.status(info["id"]).get_json()
    stream = body["participants"]["host"]["video"]
    assert stream.get("finalSequence") == stream["lastSequence"], stream  # stopped before the peer closed
    video, audio, duration = decoded(api.output_path(body, "host"))
    assert 4.0 <= duration <= 8.0 and video and audio, duration
