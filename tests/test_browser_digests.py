"""The browser module's per-chunk SHA-256 (Repr-Digest / sha256), its one resend on checksum_mismatch, setToken."""
from __future__ import annotations

import base64
import hashlib

DIGESTS = """async () => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const reply = (status, body) => new Response(JSON.stringify(body), {
    status, headers: { "Content-Type": "application/json" } });
  const sent = [], errors = [];
  const fetch = async (url, init) => {
    const sequence = Number(url.split("/").pop());
    const bytes = new Uint8Array(await init.body.arrayBuffer());
    const attempt = sent.filter((s) => s.sequence === sequence).length;
    sent.push({ sequence, digest: init.headers["Repr-Digest"], auth: init.headers.Authorization,
                body: btoa(String.fromCharCode(...bytes)) });
    if ((sequence === 1 && attempt === 0) || sequence === 2) {
      return reply(400, { error: { code: "checksum_mismatch", message: "digest differs" } });
    }
    return reply(202, {});
  };
  const rec = new Recorder({ token: "old", recordingId: "rec", participantId: "p", stream, timeslice: 200,
                             fetch, concurrency: 1 });
  rec.addEventListener("error", (e) => errors.push(e.detail));
  await rec.start();
  await new Promise((r) => setTimeout(r, 700));
  rec.setToken("new");
  await new Promise((r) => setTimeout(r, 700));
  const summary = await rec.stop();
  stream.getTracks().forEach((t) => t.stop());
  return { sent, errors, summary };
}"""


def test_chunks_carry_their_sha256_and_a_mismatch_is_resent_once(page, live_server):
    page.goto(f"{live_server.url}/demo")
    result = page.evaluate(DIGESTS)
    sent = result["sent"]
    for upload in sent:  # the header is RFC 9530's form and names exactly the bytes on the wire
        body = base64.b64decode(upload["body"])
        assert upload["digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    sequences = [u["sequence"] for u in sent]
    assert sequences.count(1) == 2 and sequences.count(2) == 2, sequences  # one resend each, never a third
    assert [u["body"] for u in sent if u["sequence"] == 1][0] == [u["body"] for u in sent if u["sequence"] == 1][1]
    assert [(e["code"], e["sequence"]) for e in result["errors"]] == [("checksum_mismatch", 2)], result["errors"]
    s = result["summary"]
    assert (s["resent"], s["failed"], s["sent"]) == (2, 1, s["produced"] - 1), s
    auths = [u["auth"] for u in sent]
    assert auths[0] == "Bearer old" and auths[-1] == "Bearer new", auths  # setToken reaches later uploads
    assert auths == sorted(auths, key=lambda a: a == "Bearer new"), auths  # never back to the old one


def test_json_uploads_carry_sha256(page, live_server):
    page.goto(f"{live_server.url}/demo")
    bodies = page.evaluate("""async () => {
      const { Recorder } = await import("/static/tapedeck-recorder.js");
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
      const bodies = [];
      const fetch = async (url, init) => { bodies.push(JSON.parse(init.body)); return new Response("{}", { status: 202 }); };
      const rec = new Recorder({ token: "t", recordingId: "rec", participantId: "p", stream, timeslice: 200,
                                 upload: "json", fetch });
      await rec.start();
      await new Promise((r) => setTimeout(r, 600));
      await rec.stop();
      stream.getTracks().forEach((t) => t.stop());
      return bodies;
    }""")
    assert bodies
    for body in bodies:
        assert body["sha256"] == hashlib.sha256(base64.b64decode(body["chunk"])).hexdigest()


def test_the_demo_refreshes_its_token_mid_recording(page, live_server, worker, api, room):
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    page.click("#start")
    page.wait_for_function("tapedeck.phase === 'recording' && tapedeck.recorder.stats.sent >= 1", timeout=20_000)
    page.wait_for_timeout(1100)  # a token minted a second later differs
    old = page.evaluate("tapedeck.token")
    assert page.evaluate("tapedeck.refreshToken()") is True
    assert page.evaluate("tapedeck.recorder.options.token") == page.evaluate("tapedeck.token") != old
    sent = page.evaluate("tapedeck.recorder.stats.sent")
    page.wait_for_function(f"tapedeck.recorder.stats.sent >= {sent + 2}", timeout=20_000)  # uploads go on
    page.click("#stop")
    page.wait_for_function("tapedeck.summary !== null", timeout=30_000)
    info = page.evaluate("({errors: tapedeck.errors, summary: tapedeck.summary})")
    assert info["errors"] == [] and info["summary"]["failed"] == 0, info
