"""Address control for recording control routes: CONTROL_ALLOWED_IPS, believing X-Forwarded-For only from TRUSTED_PROXIES."""
from __future__ import annotations

import ipaddress
import logging
from typing import Iterable

from flask import request

from app.services import services
from workers.access import Principal
from workers.errors import Forbidden
from workers.settings import Network

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str | None) -> Address | None:
    """An address as a proxy or socket writes it; IPv4-mapped IPv6 (a dual-stack listener) becomes IPv4."""
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(remote_addr: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> Address | None:
    """The caller's address: the socket peer, unless that peer is a trusted proxy; then the nearest
    X-Forwarded-For hop that is not itself a trusted proxy (walking right to left, so hops a client wrote
    are never believed). None when a hop that must be believed is not an address."""
    address = _parse(remote_addr)
    if address is None or not _within(address, trusted):
        return address
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None or not _within(address, trusted):
            return address
    return address


def require_control_address(principal: Principal, room: str) -> None:
    """403 forbidden, audited, when CONTROL_ALLOWED_IPS is set and the caller's address is outside it.

    Called on start, stop, pause, resume and delete right after the token and the path's shape (so the
    audited room is a safe id): it needs nothing but the request, so a refused address learns nothing more."""
    settings = services().settings
    if not settings.control_allowed_ips:
        return
    address = client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"), settings.trusted_proxies)
    if address is not None and _within(address, settings.control_allowed_ips):
        return
    shown = str(address) if address is not None else "unknown"
    log.warning("control refused: address=%s route=%s room=%s sub=%s", shown, request.endpoint, room, principal.sub,
                extra={"event": "control_refused", "address": shown, "route": request.endpoint,
                       "room": room, "sub": principal.sub, "token_room": principal.room})
    raise Forbidden("this address may not control recordings")
