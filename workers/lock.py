"""A Redis lock that stays held while its holder lives and expires soon after it dies (kill -9 included)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import redis
from redis.exceptions import LockError, LockNotOwnedError

from workers.errors import LockLost


class HeldLock:
    """What the holder gets: truthy when acquired; check() before each write says whether it is still ours."""

    def __init__(self, lock: redis.lock.Lock | None) -> None:
        self._lock = lock
        self.lost = threading.Event()

    def __bool__(self) -> bool:
        return self._lock is not None

    def check(self) -> None:
        """Raise LockLost when the heartbeat failed to renew or another holder has the key (one GET)."""
        if self._lock is None or self.lost.is_set() or not self._lock.owned():
            self.lost.set()
            raise LockLost(f"lost the lock {self._lock.name if self._lock else ''}")


@contextmanager
def heartbeat_lock(client: redis.Redis, name: str, ttl_seconds: int) -> Iterator[HeldLock]:
    """Yield a truthy HeldLock when acquired (renewed every ttl/3 by a daemon thread), a falsy one when another
    holder has it. A renewal the server refuses (expired, or another token) marks it lost for check()."""
    lock = client.lock(name, timeout=ttl_seconds, blocking=False, thread_local=False)
    if not lock.acquire():
        yield HeldLock(None)
        return
    held = HeldLock(lock)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_seconds / 3):
            try:
                lock.reacquire()
            except LockNotOwnedError:
                held.lost.set()  # expired or taken: a second finalize may be running, ours must not write
                return
            except (LockError, redis.RedisError):
                continue  # Redis blinked; the next beat tries again before the TTL runs out

    beat = threading.Thread(target=renew, name=f"lock-heartbeat:{name}", daemon=True)
    beat.start()
    try:
        yield held
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            lock.release()
        except LockError:
            pass  # expired or taken while we were stuck: nothing of ours to release


def is_locked(client: redis.Redis, name: str) -> bool:
    return bool(client.exists(name))
