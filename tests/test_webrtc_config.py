"""RTC_* settings (each bound refused with the variable's name), the UDP port range the media loop binds in, the
per-process peer bound, and the recorder's behaviour before the first key frame."""
from __future__ import annotations

import asyncio
import socket

import pytest

from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.webrtc.config import RtcSettings
from workers.webrtc.forwarding import EncodedFrame
from workers.webrtc.loop import RtcLoop
from workers.webrtc.recorder import MAX_HELD_AUDIO, SegmentRecorder

pytestmark = pytest.mark.timeout(60)


def test_defaults_and_parsing() -> None:
    assert RtcSettings.from_env({}) == RtcSettings()
    rtc = Settings.from_env({"TAPEDECK_ENV": "development", "RTC_HOST_ADDRESSES": "127.0.0.1, ::1",
                             "RTC_ICE_SERVERS": "stun:stun.example.org:3478,turn:turn.example.org",
                             "RTC_UDP_PORT_MIN": "40000", "RTC_UDP_PORT_MAX": "40100", "RTC_SEGMENT_MS": "500",
                             "RTC_MAX_PEERS": "10", "RTC_MAX_SOCKETS_PER_TOKEN": "3"}).rtc
    assert rtc.host_addresses == ("127.0.0.1", "::1")
    assert rtc.ice_servers == ({"urls": ["stun:stun.example.org:3478"]}, {"urls": ["turn:turn.example.org"]})
    assert (rtc.udp_port_min, rtc.udp_port_max, rtc.segment_seconds, rtc.max_peers, rtc.max_sockets_per_token) == \
        (40000, 40100, 0.5, 10, 3)
    json_servers = RtcSettings.from_env(
        {"RTC_ICE_SERVERS": '[{"urls": "turn:t.example.org:3478", "username": "u", "credential": "p"}]'})
    assert json_servers.ice_servers == ({"urls": ["turn:t.example.org:3478"], "username": "u", "credential": "p"},)


@pytest.mark.parametrize("env,name", [
    ({"RTC_HOST_ADDRESSES": "localhost"}, "RTC_HOST_ADDRESSES"),
    ({"RTC_ICE_SERVERS": "http://stun.example.org"}, "RTC_ICE_SERVERS"),
    ({"RTC_ICE_SERVERS": "[{"}, "RTC_ICE_SERVERS"),
    ({"RTC_ICE_SERVERS": '[{"urls": "stun:x", "secret": 1}]'}, "RTC_ICE_SERVERS"),
    ({"RTC_UDP_PORT_MIN": "40000"}, "RTC_UDP_PORT_MAX"),
    ({"RTC_UDP_PORT_MIN": "40100", "RTC_UDP_PORT_MAX": "40000"}, "RTC_UDP_PORT_MIN"),
    ({"RTC_UDP_PORT_MIN": "80", "RTC_UDP_PORT_MAX": "90"}, "RTC_UDP_PORT_MIN"),
    ({"RTC_UDP_PORT_MIN": "40000", "RTC_UDP_PORT_MAX": "70000"}, "RTC_UDP_PORT_MAX"),
    ({"RTC_SEGMENT_MS": "100"}, "RTC_SEGMENT_MS"),
    ({"RTC_SEGMENT_MS": "20000"}, "RTC_SEGMENT_MS"),
    ({"RTC_MAX_PEERS": "0"}, "RTC_MAX_PEERS"),
    ({"RTC_MAX_SOCKETS_PER_TOKEN": "many"}, "RTC_MAX_SOCKETS_PER_TOKEN"),
    ({"RTC_MAX_SOCKETS_PER_TOKEN": "101"}, "RTC_MAX_SOCKETS_PER_TOKEN"),
])
def test_bad_values_fail_naming_the_variable(env: dict, name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"TAPEDECK_ENV": "development", **env})


def test_udp_endpoints_bind_inside_the_range() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low, high = base, base + 2
    rtc = RtcLoop(low, high)

    async def bind_all() -> list[int]:
        loop = asyncio.get_running_loop()
        transports, ports = [], []
        try:
            for _ in range(3):
                transport, _p = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
                transports.append(transport)
                ports.append(transport.get_extra_info("sockname")[1])
            with pytest.raises(OSError, match="RTC_UDP_PORT_MIN/MAX"):
                await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        finally:
            for transport in transports:
                transport.close()
        return ports

    try:
        ports = rtc.call(bind_all(), 10)
    except OSError:
        pytest.skip("a port of the probed range was taken meanwhile")
    finally:
        rtc.stop()
    assert sorted(ports) == [low, low + 1, high]


def test_peer_bound_per_process(stack_env, monkeypatch) -> None:
    import aioice.ice
    import aiortc.rtcrtpreceiver

    from workers.access import Principal
    from workers.webrtc.peers import PeerManager, SignalError

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", aiortc.rtcrtpreceiver.get_decoder)  # undone after
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    manager = PeerManager(Settings.from_env({**stack_env, "RTC_MAX_PEERS": "1"}))
    first = manager.open(Principal("p1", "room-bound", "participant"))
    with pytest.raises(SignalError) as refused:
        manager.open(Principal("p2", "room-bound", "participant"))
    assert refused.value.code == "busy"
    manager.close(first)
    manager.close(manager.open(Principal("p2", "room-bound", "participant")))  # the slot came back
    assert manager.count == 0 and manager.sessions == {}
    manager.shutdown()


def _vp8(key: bool) -> EncodedFrame:
    data = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" if key else b"\x11\x02\x00"
    return EncodedFrame("video", "video/vp8", data + b"\x00" * 40, 0, 90000)


def test_recorder_waits_for_a_key_frame_and_holds_bounded_audio() -> None:
    out: list[tuple[int, bytes, bool]] = []
    recorder = SegmentRecorder(lambda seq, data, final, ts: out.append((seq, data, final)), 0, True, True)
    for i in range(MAX_HELD_AUDIO + 20):
        recorder.add(EncodedFrame("audio", "audio/opus", b"\xfc\xff\xfe", i * 960, 48000), arrived=1000 + i * 0.02)
    recorder.add(_vp8(key=False), arrived=1011)
    assert recorder.waiting_for_keyframe and len(recorder.held_audio) == MAX_HELD_AUDIO
    assert not recorder.cut() and out == []  # nothing written yet: no sequence is used
    recorder.add(_vp8(key=True), arrived=1011.1)
    assert not recorder.waiting_for_keyframe and recorder.held_audio == []
    assert recorder.frames == {"video": 1, "audio": MAX_HELD_AUDIO}
    recorder.finish(final=True)
    assert [(seq, final) for seq, _, final in out] == [(0, True)] and out[0][1][:4] == b"\x1a\x45\xdf\xa3"
    recorder.finish(final=True)  # twice is harmless
    assert len(out) == 1
