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


def pack_command(args: tuple | list) -> bytes:
    """One command in RESP, encoded as redis-py's default encoder does (str as UTF-8, int and float by repr)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            arg = repr(arg).encode()
        elif not isinstance(arg, bytes):
            raise redis.DataError(f"invalid input of type {type(arg).__name__}: convert to bytes, string, int or float first")
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class LeanScript:
    """A Lua script called as redis-py's Script calls it (EVALSHA on a connection of the client's pool, under the
    connection's retry policy, a failed connection dropped; the script loaded again when Redis answers NOSCRIPT),
    minus redis-py's generic command path: packing every argument through its encoder and dispatching the command
    cost 27 us of CPU per call against 36 us for the whole round trip done here (one chunk is one call). For the
    script intake runs on every chunk; anything called less often keeps client.register_script."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.script = client.register_script(source)

    def __call__(self, keys: list, args: list) -> object:
        if self.client.connection is not None:  # a single-connection client: its own locking applies
            return self.script(keys=keys, args=args)
        command = pack_command((b"EVALSHA", self.script.sha, len(keys), *keys, *args))
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            return conn.retry.call_with_retry(lambda: _round_trip(conn, command), lambda _error: conn.disconnect())
        except redis.exceptions.NoScriptError:
            pass  # Redis restarted or flushed its scripts: the script was not run
        finally:
            if conn.should_reconnect():  # as redis-py does: a server's maintenance notice asked for a new connection
                conn.disconnect()
            pool.release(conn)
        return self.script(keys=keys, args=args)  # redis-py's Script loads it and calls it again


def _round_trip(conn, command: bytes) -> object:  # type: ignore[no-untyped-def]
    conn.send_packed_command([command])
    return conn.read_response()
