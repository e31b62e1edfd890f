"""Redis behind Sentinel, with real processes: master + replica + redis-sentinel; kill -9 the master and the one
client factory every process uses follows the promoted replica, with what was acknowledged (WAIT 1) still there."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import redis

from tests.services import free_port, wait_until
from workers.redis_client import celery_broker, connect, parse_sentinels

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(not REDIS, reason="needs Debian's redis-server")


def _spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pings(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def sentinel_stack(tmp_path):
    """Master, one replica and one sentinel (quorum 1, master judged down after 500 ms), killed on teardown."""
    master, replica, sentinel = free_port(), free_port(), free_port()
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs = {"master": _spawn([REDIS, "--port", str(master), "--dir", str(tmp_path), *base])}
    try:
        wait_until(lambda: _pings(master), 10, what="master")
        procs["replica"] = _spawn([REDIS, "--port", str(replica), "--dir", str(tmp_path), *base,
                                   "--replicaof", "127.0.0.1", str(master)])
        wait_until(lambda: _pings(replica) and redis.Redis(port=replica).info("replication").get(
            "master_link_status") == "up", 15, what="replica in sync")
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor tapedeck 127.0.0.1 {master} 1\n"
                        "sentinel down-after-milliseconds tapedeck 500\nsentinel failover-timeout tapedeck 5000\n")
        procs["sentinel"] = _spawn([REDIS, str(conf), "--sentinel"])
        wait_until(lambda: _pings(sentinel), 10, what="sentinel")
        yield {"master": master, "replica": replica, "sentinels": f"127.0.0.1:{sentinel}", "procs": procs}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(10)


def test_client_follows_the_master_through_a_kill_9_failover(sentinel_stack):
    client = connect("redis://127.0.0.1:6379/0", sentinel_stack["sentinels"], "tapedeck", socket_timeout=2)
    client.set("acknowledged", "chunk-7")
    assert client.wait(1, 800) == 1  # on the replica before we call it acknowledged
    assert client.connection_pool.get_master_address()[1] == sentinel_stack["master"]
    sentinel_stack["procs"]["master"].send_signal(signal.SIGKILL)

    def write_works() -> bool:
        try:
            return bool(client.set("after", "failover"))
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            return False

    wait_until(write_works, 45, interval=0.2, what="writes after failover")
    assert client.connection_pool.get_master_address()[1] == sentinel_stack["replica"]
    assert client.get("acknowledged") == b"chunk-7"
    assert redis.Redis(port=sentinel_stack["replica"]).get("after") == b"failover"


def test_without_sentinels_the_url_is_used_as_is():
    client = connect("redis://127.0.0.1:1/3")
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert celery_broker("redis://127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0", {})


def test_celery_gets_kombu_sentinel_urls():
    url, options = celery_broker("redis://:pw@ignored:6379/2", "10.0.0.1:26379, 10.0.0.2:26380", "mymaster", "spw")
    assert url == "sentinel://:pw@10.0.0.1:26379/2;sentinel://:pw@10.0.0.2:26380/2"
    assert options == {"master_name": "mymaster", "sentinel_kwargs": {"password": "spw"}}


@pytest.mark.parametrize("bad", ["host", "host:", ":26379", "host:0", "host:70000", "host:x"])
def test_a_bad_sentinel_address_is_refused(bad):
    with pytest.raises(ValueError, match="REDIS_SENTINELS"):
        parse_sentinels(bad)


def test_sentinels_without_a_master_name_are_refused():
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        connect("redis://127.0.0.1:6379/0", "127.0.0.1:26379", "")


def test_settings_refuse_a_bad_sentinel_configuration():
    from workers.errors import ConfigurationError
    from workers.settings import Settings

    base = {"TAPEDECK_ENV": "development"}
    with pytest.raises(ConfigurationError, match="REDIS_SENTINEL_MASTER"):
        Settings.from_env({**base, "REDIS_SENTINELS": "127.0.0.1:26379"})
    with pytest.raises(ConfigurationError, match="REDIS_SENTINELS"):
        Settings.from_env({**base, "REDIS_SENTINELS": "nohost", "REDIS_SENTINEL_MASTER": "m"})
    settings = Settings.from_env({**base, "REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"})
    assert (settings.redis_sentinels, settings.redis_sentinel_master) == ("127.0.0.1:26379", "m")


def test_every_process_resources_follow_the_sentinel_master(sentinel_stack, tmp_path):
    """Resources (web and worker) build their client through the factory, so they write to the current master."""
    from workers.resources import Resources
    from workers.settings import Settings

    settings = Settings.from_env({"TAPEDECK_ENV": "development", "STAGING_DIR": str(tmp_path / "staging"),
                                  "REDIS_SENTINELS": sentinel_stack["sentinels"], "REDIS_SENTINEL_MASTER": "tapedeck"})
    resources = Resources.build(settings, {"STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(tmp_path / "out")})
    resources.redis.set("via-resources", "yes")
    assert redis.Redis(port=sentinel_stack["master"]).get("via-resources") == b"yes"


def test_celery_publishes_through_sentinel_to_the_current_master(sentinel_stack):
    """celeryconfig with REDIS_SENTINELS: a task sent lands in the master's queue (kombu sentinel:// transport)."""
    import json
    import os
    import sys

    from tests.services import ROOT

    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinel_stack["sentinels"],
           "REDIS_SENTINEL_MASTER": "tapedeck", "CELERY_BEAT_SCHEDULE_FILE": str(ROOT / "var" / "sentinel-beat")}
    code = ("import celeryconfig, celery, json; app = celery.Celery(); app.config_from_object(celeryconfig);"
            "app.send_task('tapedeck.sentinel_probe', queue='celery');"
            "print(json.dumps([celeryconfig.broker_url, celeryconfig.broker_transport_options['master_name']]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    url, master = json.loads(out.stdout.strip().splitlines()[-1])
    assert url.startswith("sentinel://127.0.0.1:") and master == "tapedeck"
    queued = redis.Redis(port=sentinel_stack["master"]).lrange("celery", 0, -1)
    assert len(queued) == 1 and json.loads(queued[0])["headers"]["task"] == "tapedeck.sentinel_probe"


def test_the_start_up_check_reaches_redis_through_sentinel(sentinel_stack, tmp_path):
    """REDIS_URL points nowhere: the start-up persistence check still reads the master (which persists nothing)."""
    import logging

    from workers.redis_persistence import Persistence, verify_at_startup
    from workers.settings import Settings

    env = {"TAPEDECK_ENV": "development", "REDIS_URL": "redis://127.0.0.1:1/0", "STAGING_DIR": str(tmp_path / "s"),
           "REDIS_SENTINELS": sentinel_stack["sentinels"], "REDIS_SENTINEL_MASTER": "tapedeck",
           "STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(tmp_path / "out")}
    verdict = verify_at_startup(Settings.from_env(env), logging.getLogger("test"))
    assert verdict.persistence is Persistence.NONE
