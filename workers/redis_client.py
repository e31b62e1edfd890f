"""One way for every process to get a Redis client, so a deployment can put Redis behind Sentinel: with sentinels
configured the client asks them for the current master on each (re)connect and so follows a failover."""
from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (REDIS_SENTINELS) as address pairs; a bad entry is a configuration error."""
    pairs = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS entry {entry!r} is not host:port")
        pairs.append((host, int(port)))
    return pairs


def connect(url: str, sentinels: str = "", master: str = "", sentinel_password: str = "",
            socket_timeout: float = 5.0, **options) -> redis.Redis:
    """A client for REDIS_URL, or for the Sentinel-named master (db and password still come from REDIS_URL)."""
    pairs = parse_sentinels(sentinels)
    if not pairs:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, **options)
    if not master:
        raise ValueError("REDIS_SENTINEL_MASTER is required with REDIS_SENTINELS")
    parts = urlsplit(url)
    db = int(parts.path.lstrip("/") or 0)
    sentinel = Sentinel(pairs, socket_timeout=socket_timeout,
                        sentinel_kwargs={"password": sentinel_password or None, "socket_timeout": socket_timeout})
    return sentinel.master_for(master, db=db, password=parts.password, socket_timeout=socket_timeout, **options)


def celery_broker(url: str, sentinels: str = "", master: str = "", sentinel_password: str = "") -> tuple[str, dict]:
    """Broker/result URL and transport options for Celery: kombu's `sentinel://` form when sentinels are set."""
    pairs = parse_sentinels(sentinels)
    if not pairs:
        return url, {}
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    auth = f":{parts.password}@" if parts.password else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in pairs)
    options: dict = {"master_name": master}
    if sentinel_password:
        options["sentinel_kwargs"] = {"password": sentinel_password}
    return broker, options


def for_settings(settings, **options) -> redis.Redis:
    """The process's client from its Settings (REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER/PASSWORD)."""
    return connect(settings.redis_url, settings.redis_sentinels, settings.redis_sentinel_master,
                   settings.redis_sentinel_password, **options)
