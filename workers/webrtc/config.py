"""RTC_* settings, parsed once with the rest of workers/settings.py: where peers gather, which ICE servers they
use, which UDP ports they bind, and the bounds of the signalling socket."""
from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from storage_providers.env_settings import EnvSettings
from workers.errors import ConfigurationError

ICE_SCHEMES = ("stun:", "turn:", "turns:")


def _ice_servers(raw: str) -> tuple[dict, ...]:
    """JSON as a browser's iceServers ([{"urls", "username", "credential"}]) or comma-separated stun:/turn: URLs."""
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            servers = json.loads(raw)
        except ValueError:
            raise ValueError("is not valid JSON") from None
    else:
        servers = [{"urls": part.strip()} for part in raw.split(",") if part.strip()]
    out = []
    for server in servers:
        if not isinstance(server, dict) or set(server) - {"urls", "username", "credential"}:
            raise ValueError("entries are objects with urls, username, credential")
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ValueError(f"urls must start with stun:, turn: or turns:, got {urls!r}")
        out.append({**server, "urls": urls})
    return tuple(out)


class RtcSettings(EnvSettings):
    config_error: ClassVar[type[Exception]] = ConfigurationError
    secret_variables: ClassVar[frozenset[str]] = frozenset({"RTC_ICE_SERVERS"})
    """It may carry TURN credentials."""

    host_addresses: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="RTC_HOST_ADDRESSES")
    """Interface addresses peers gather host candidates on; empty: every non-loopback interface (aioice's own)."""
    ice_servers: Annotated[tuple[dict, ...], NoDecode] = Field((), validation_alias="RTC_ICE_SERVERS")
    """STUN/TURN servers; empty means none (never aiortc's default public STUN server)."""
    udp_port_min: int = Field(0, ge=0, le=65535, validation_alias="RTC_UDP_PORT_MIN")
    udp_port_max: int = Field(0, ge=0, le=65535, validation_alias="RTC_UDP_PORT_MAX")
    """Host candidates bind inside [min, max] when both are set (the range to open in a firewall); 0: any port."""
    segment_ms: int = Field(1000, ge=200, le=10000, validation_alias="RTC_SEGMENT_MS")
    """How much media one staged segment holds (like a MediaRecorder timeslice)."""
    max_peers: int = Field(50, ge=1, le=10000, validation_alias="RTC_MAX_PEERS")
    """Peer connections one web process holds at once; more sockets get 429-like `busy` errors."""
    max_sockets_per_token: int = Field(2, ge=1, le=100, validation_alias="RTC_MAX_SOCKETS_PER_TOKEN")
    """Signalling sockets one token may hold open at once, across web processes."""

    @property
    def segment_seconds(self) -> float:
        return self.segment_ms / 1000

    @field_validator("host_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            try:
                out.append(str(ipaddress.ip_address(part)))
            except ValueError:
                raise ValueError(f"must be comma-separated IP addresses, got {part!r}") from None
        return tuple(out)

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _servers(cls, value: Any) -> Any:
        return _ice_servers(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _port_range(self) -> "RtcSettings":
        low, high = self.udp_port_min, self.udp_port_max
        if (low == 0) != (high == 0) or low > high:
            raise ValueError("RTC_UDP_PORT_MIN and RTC_UDP_PORT_MAX must both be set, with MIN <= MAX")
        if low and low < 1024:
            raise ValueError("RTC_UDP_PORT_MIN must be at least 1024")
        return self
