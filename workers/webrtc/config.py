"""RTC_* settings, parsed once with the rest of workers/settings.py: where peers gather, which ICE servers they
use, which UDP ports they bind, and the bounds of the signalling socket."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Mapping

from workers.errors import ConfigurationError

ICE_SCHEMES = ("stun:", "turn:", "turns:")


def _addresses(raw: str) -> tuple[str, ...]:
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ConfigurationError(f"RTC_HOST_ADDRESSES must be comma-separated IP addresses, got {part!r}") from None
    return tuple(out)


def _ice_servers(raw: str) -> tuple[dict, ...]:
    """JSON as a browser's iceServers ([{"urls", "username", "credential"}]) or comma-separated stun:/turn: URLs."""
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            servers = json.loads(raw)
        except ValueError:
            raise ConfigurationError("RTC_ICE_SERVERS is not valid JSON") from None
    else:
        servers = [{"urls": part.strip()} for part in raw.split(",") if part.strip()]
    out = []
    for server in servers:
        if not isinstance(server, dict) or set(server) - {"urls", "username", "credential"}:
            raise ConfigurationError("RTC_ICE_SERVERS entries are objects with urls, username, credential")
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ConfigurationError(f"RTC_ICE_SERVERS urls must start with stun:, turn: or turns:, got {urls!r}")
        out.append({**server, "urls": urls})
    return tuple(out)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be from {low} to {high}, got {value}")
    return value


@dataclass(frozen=True)
class RtcSettings:
    host_addresses: tuple[str, ...] = ()
    """Interface addresses peers gather host candidates on; empty: every non-loopback interface (aioice's own)."""
    ice_servers: tuple[dict, ...] = field(default_factory=tuple)
    """STUN/TURN servers; empty means none (never aiortc's default public STUN server)."""
    udp_port_min: int = 0
    udp_port_max: int = 0
    """Host candidates bind inside [min, max] when both are set (the range to open in a firewall); 0: any port."""
    segment_seconds: float = 1.0
    """How much media one staged segment holds (like a MediaRecorder timeslice)."""
    max_peers: int = 50
    """Peer connections one web process holds at once; more sockets get 429-like `busy` errors."""
    max_sockets_per_token: int = 2
    """Signalling sockets one token may hold open at once, across web processes."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "RtcSettings":
        low = _int(env, "RTC_UDP_PORT_MIN", 0, 0, 65535)
        high = _int(env, "RTC_UDP_PORT_MAX", 0, 0, 65535)
        if (low == 0) != (high == 0) or low > high:
            raise ConfigurationError("RTC_UDP_PORT_MIN and RTC_UDP_PORT_MAX must both be set, with MIN <= MAX")
        if low and low < 1024:
            raise ConfigurationError("RTC_UDP_PORT_MIN must be at least 1024")
        return cls(
            host_addresses=_addresses(env.get("RTC_HOST_ADDRESSES", "")),
            ice_servers=_ice_servers(env.get("RTC_ICE_SERVERS", "")),
            udp_port_min=low, udp_port_max=high,
            segment_seconds=_int(env, "RTC_SEGMENT_MS", 1000, 200, 10000) / 1000,
            max_peers=_int(env, "RTC_MAX_PEERS", 50, 1, 10000),
            max_sockets_per_token=_int(env, "RTC_MAX_SOCKETS_PER_TOKEN", 2, 1, 100),
        )
