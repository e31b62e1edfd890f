"""A Redis lock that stays held while its holder lives and expires soon after it dies (kill -9 included)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import redis
from redis.exceptions import LockError


@contextmanager
def heartbeat_lock(client: redis.Redis, name: str, ttl_seconds: int) -> Iterator[bool]:
    """Yield True when acquired (renewed every ttl/3 by a daemon thread), False when another holder has it."""
    lock = client.lock(name, timeout=ttl_seconds, blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_seconds / 3):
            try:
                lock.reacquire()
            except (LockError, redis.RedisError):
                continue  # Redis blinked; the next beat tries again before the TTL runs out

    beat = threading.Thread(target=renew, name=f"lock-heartbeat:{name}", daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            lock.release()
        except LockError:
            pass  # expired while we were stuck: nothing of ours to release


def is_locked(client: redis.Redis, name: str) -> bool:
    return bool(client.exists(name))
