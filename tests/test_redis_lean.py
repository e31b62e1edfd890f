"""LeanScript, the accept script's call without redis-py's generic command path: the same bytes on the wire, the same
answers, and redis-py's behaviour where it matters for a chunk (NOSCRIPT after a restart, a dropped connection
retried, errors raised, no connection leaked from the pool)."""
from __future__ import annotations

import pytest
import redis

from workers.redis_client import LeanScript, pack_command

COUNT = "local n = redis.call('INCR', KEYS[1]) return {n, ARGV[1], ARGV[2], ARGV[3], ARGV[4]}"


def test_packs_as_redis_py_packs():
    args = (b"EVALSHA", "f" * 40, 2, "tapedeck:k:é", b"raw\r\nbytes", 0, -12, 1733475000.123456, "", "a b")
    connection = redis.Connection()
    assert pack_command(args) == b"".join(connection.pack_command(*args))


def test_refuses_what_redis_py_refuses():
    with pytest.raises(redis.DataError):
        pack_command((b"EVALSHA", True))
    with pytest.raises(redis.DataError):
        pack_command((b"EVALSHA", None))


def test_answers_as_script_and_returns_its_connection(private_redis):
    lean = LeanScript(private_redis, COUNT)
    assert lean(keys=["n"], args=["x", 7, 2.5, b"y"]) == [1, b"x", b"7", b"2.5", b"y"]
    assert lean.script(keys=["n"], args=["x", 7, 2.5, b"y"]) == [2, b"x", b"7", b"2.5", b"y"]
    assert not private_redis.connection_pool._in_use_connections


def test_loads_the_script_again_after_redis_lost_it_and_runs_it_once(private_redis):
    lean = LeanScript(private_redis, COUNT)
    assert lean(keys=["n"], args=["a", "b", "c", "d"])[0] == 1
    private_redis.script_flush()  # what a Redis restart does to the script cache
    assert lean(keys=["n"], args=["a", "b", "c", "d"])[0] == 2
    assert int(private_redis.get("n")) == 2
    assert not private_redis.connection_pool._in_use_connections


def test_a_dropped_connection_is_retried_on_a_new_one(private_redis):
    lean = LeanScript(private_redis, COUNT)
    lean(keys=["n"], args=["a", "b", "c", "d"])
    other = redis.Redis(connection_pool=redis.ConnectionPool(**private_redis.connection_pool.connection_kwargs))
    assert other.client_kill_filter(_type="normal", skipme=True) >= 1  # the pool's idle connection is cut
    assert lean(keys=["n"], args=["a", "b", "c", "d"])[0] == 2
    other.close()


def test_a_script_error_is_raised_and_the_connection_kept_usable(private_redis):
    failing = LeanScript(private_redis, "return redis.error_reply('ERR refused here')")
    with pytest.raises(redis.ResponseError, match="refused here"):
        failing(keys=[], args=[])
    assert not private_redis.connection_pool._in_use_connections
    assert LeanScript(private_redis, COUNT)(keys=["n"], args=["a", "b", "c", "d"])[0] == 1
