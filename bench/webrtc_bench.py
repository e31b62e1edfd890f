"""WebRTC ingest cost: server CPU per recorded 640x480 participant, against the Procfile's `web` (one gunicorn worker).

Clients send PRE-ENCODED media (VP8 640x480 30 fps with a key frame every second, Opus 20 ms frames; encoded once
before the run and replayed), so the clients' own encoding costs nothing and the machine's 2 cores go to the server.
For each peer count the same peers are measured twice in one run, back to back:
  - baseline: connected, the room not recording (ICE, DTLS/SRTP, RTP reassembly: the cost of holding the peer);
  - recording: the room records (forwarding into WebM segments, staging, Redis).
It prints the web worker's CPU per peer in both windows, what recording adds, /healthz p95 while recording, and the
peers one process could hold (one media loop thread per process: about one core, kept at 80%).

    .venv/bin/python -m bench.webrtc_bench                 # 1, 4 and 8 peers, 10 s windows
    .venv/bin/python -m bench.webrtc_bench --peers 1 2 --seconds 5
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import shutil
import subprocess
import time
import urllib.request

import aioice.ice
import av
import psutil
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from simple_websocket import Client

from app.auth import mint_token
from bench.load_bench import procfile_web
from tests.services import ROOT, VENV_BIN, RedisServer, free_port, wait_until

OUT = ROOT / "bench" / "out" / "webrtc"
JWT_SECRET = "webrtc-bench-secret-0123456789abcdef0123456789abcdef"
ROOM = "rtcbench"
WIDTH, HEIGHT, FPS = 640, 480, 30
VIDEO_BASE = fractions.Fraction(1, 90000)
AUDIO_BASE = fractions.Fraction(1, 48000)
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def encode_clip(seconds: int = 4) -> tuple[list[bytes], list[bytes]]:
    """VP8 frames (a key frame each second, 20% of each picture noise so the bitrate is a camera's) and Opus."""
    video = av.CodecContext.create("libvpx", "w")
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.time_base, video.framerate, video.gop_size = fractions.Fraction(1, FPS), FPS, FPS
    video.bit_rate = 1_200_000
    video.options = {"deadline": "realtime", "cpu-used": "8"}
    frames = []
    for i in range(seconds * FPS):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        size = frame.planes[0].buffer_size
        frame.planes[0].update(bytes([(i * 5) % 200 + 16]) * (size - size // 5) + os.urandom(size // 5))
        for plane in frame.planes[1:]:
            plane.update(b"\x80" * plane.buffer_size)
        frame.pts = i
        frames += [bytes(p) for p in video.encode(frame)]
    frames += [bytes(p) for p in video.encode(None)]
    audio = av.CodecContext.create("libopus", "w")
    audio.sample_rate, audio.layout, audio.format = 48000, "stereo", "s16"
    audio.bit_rate = 64_000
    packets = []
    for i in range(seconds * 50):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(os.urandom(frame.planes[0].buffer_size // 8) * 8)
        frame.sample_rate, frame.pts = 48000, i * 960
        packets += [bytes(p) for p in audio.encode(frame)]
    return frames, packets


class Replay(MediaStreamTrack):
    """Sends pre-encoded packets in real time; aiortc only packetizes them (encoder.pack)."""

    def __init__(self, kind: str, packets: list[bytes], step: int, base: fractions.Fraction, rate: float) -> None:
        super().__init__()
        self.kind, self.packets, self.step, self.base, self.rate = kind, packets, step, base, rate
        self.index, self.began = 0, None

    async def recv(self) -> av.Packet:
        if self.began is None:
            self.began = time.monotonic()
        due = self.began + self.index / self.rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        packet = av.Packet(self.packets[self.index % len(self.packets)])
        packet.pts, packet.time_base = self.index * self.step, self.base
        self.index += 1
        return packet


async def connect(port: int, participant: str, video: list[bytes], audio: list[bytes]) -> tuple[RTCPeerConnection, Client]:
    token = mint_token(JWT_SECRET, ROOM, participant, "participant", 3600)
    ws = await asyncio.to_thread(Client.connect, f"ws://127.0.0.1:{port}/video-calls/{ROOM}/signal?token={token}")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Replay("video", video, 90000 // FPS, VIDEO_BASE, FPS))
    pc.addTrack(Replay("audio", audio, 960, AUDIO_BASE, 50))
    await pc.setLocalDescription(await pc.createOffer())
    ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
    answer = json.loads(await asyncio.to_thread(ws.receive, 30))
    if answer.get("type") != "answer":
        raise SystemExit(f"no answer: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    for _ in range(400):
        if pc.connectionState == "connected":
            return pc, ws
        await asyncio.sleep(0.05)
    raise SystemExit(f"peer {participant} never connected")


def host(port: int, action: str) -> None:
    token = mint_token(JWT_SECRET, ROOM, "host", "host")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/video-calls/{ROOM}/recording/{action}", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (201, 202)


def worker_cpu(master: psutil.Process) -> float:
    total = 0.0
    for proc in master.children(recursive=True):
        times = proc.cpu_times()
        total += times.user + times.system
    return total


async def window(master: psutil.Process, port: int, seconds: float) -> tuple[float, float]:
    """(web CPU cores over the window, /healthz p95 ms during it)."""
    latencies: list[float] = []
    start_cpu, start = worker_cpu(master), time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.perf_counter()
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", None, 5)
        latencies.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.2)
    cores = (worker_cpu(master) - start_cpu) / (time.monotonic() - start)
    latencies.sort()
    return cores, latencies[int(0.95 * (len(latencies) - 1))]


def frames_sent(peers) -> int:
    return sum(s.track.index for pc, _ws in peers for s in pc.getSenders() if s.track and s.track.kind == "video")


async def measure(port: int, master: psutil.Process, count: int, seconds: float, clip) -> dict:
    peers = [await connect(port, f"p{count}-{i}", *clip) for i in range(count)]
    try:
        await asyncio.sleep(2)
        idle, _ = await window(master, port, seconds)
        host(port, "start")
        await asyncio.sleep(2)  # first key frame, first segments
        sent, began = frames_sent(peers), time.monotonic()
        busy, p95 = await window(master, port, seconds)
        fps = (frames_sent(peers) - sent) / (time.monotonic() - began) / count
        host(port, "stop")
    finally:
        for pc, ws in peers:
            ws.send(json.dumps({"type": "bye"}))
            await pc.close()
            ws.close()
    await asyncio.sleep(1)
    return {"peers": count, "idle": idle / count, "recording": busy / count, "p95": p95, "fps": fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    clip = encode_clip()
    redis_server = RedisServer(OUT / "redis")
    port = free_port()
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
           "PORT": str(port), "TAPEDECK_ENV": "production", "JWT_SECRET": JWT_SECRET, "REDIS_URL": redis_server.url,
           "REDIS_ALLOW_NO_PERSISTENCE": "true", "STAGING_DIR": str(OUT / "staging"), "STORAGE_PROVIDER": "local",
           "LOCAL_STORAGE_DIR": str(OUT / "recordings"), "RTC_HOST_ADDRESSES": "127.0.0.1", "WEB_CONCURRENCY": "1",
           "GUNICORN_CMD_ARGS": "--no-control-socket", "STAGING_MIN_FREE_BYTES": "0"}
    with open(OUT / "web.log", "wb") as log:
        web = subprocess.Popen(["bash", "-c", procfile_web()], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: web.poll() is not None or _answers(port), 60, what="web")
        master = psutil.Process(web.pid)
        rows = [asyncio.run(measure(port, master, n, args.seconds, clip)) for n in args.peers]
    finally:
        os.killpg(web.pid, 2)
        web.wait(20)
        redis_server.stop()
    print(f"WebRTC ingest, one gunicorn gevent worker, pre-encoded {WIDTH}x{HEIGHT} {FPS} fps VP8 + Opus, "
          f"{args.seconds:.0f} s windows (forwarding, no re-encode)")
    print(f"{'peers':>5} {'held core/peer':>15} {'recording core/peer':>20} {'added by recording':>19} "
          f"{'healthz p95':>12} {'sent fps/peer':>14}")
    for row in rows:
        print(f"{row['peers']:>5} {row['idle']:>15.3f} {row['recording']:>20.3f} "
              f"{row['recording'] - row['idle']:>19.3f} {row['p95']:>10.1f}ms {row['fps']:>14.1f}")
    print("(a sent rate under 30 fps means this client, on the same cores, could not keep up: per-peer CPU is then low)")
    most = max(rows, key=lambda row: row["peers"])  # fixed costs (the loop, its timers) are shared: the largest count
    print(f"peers per web process (one media loop thread, 0.8 of a core, at {most['peers']} peers' cost): "
          f"~{int(0.8 / most['recording']) if most['recording'] > 0 else 0}")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
