"""`make run`: the whole Procfile under honcho, with web on the documented port and safe development defaults.

Configuration is the shell environment over `.env` (ENV_FILE picks another file) over these defaults:
TAPEDECK_ENV=development, PORT=8000, PUBLIC_BASE_URL=http://localhost:$PORT and, in development only,
BIND_HOST=127.0.0.1 (the dev token route and an unauthenticated Flower never leave this machine).
honcho numbers ports from `-p` in Procfile order (web, the first line, gets PORT; the others get
PORT+100, +200 …, which they ignore), so links are minted from PUBLIC_BASE_URL, never from a process's PORT.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

from dotenv import dotenv_values

from scripts.ensure_redis import ensure
from workers.settings import DEFAULT_REDIS_URL

DEFAULT_PORT = "8000"
LOOPBACK = "127.0.0.1"


def merged_env(environ: Mapping[str, str], env_file: str) -> dict[str, str]:
    """The env file's variables under the shell's (the shell wins, as with dotenv and the flask CLI)."""
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if os.path.isfile(env_file) else {}
    return {**from_file, **environ}


def with_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """Fill what is unset or empty: development on loopback, web on 8000, one public base URL for every process."""
    out = dict(env)

    def default(name: str, value: str) -> str:
        if not out.get(name, "").strip():
            out[name] = value
        return out[name].strip()

    mode = default("TAPEDECK_ENV", "development")
    port = default("PORT", DEFAULT_PORT)
    default("PUBLIC_BASE_URL", f"http://localhost:{port}")
    if mode == "development":
        default("BIND_HOST", LOOPBACK)
    return out


def honcho_argv(env: Mapping[str, str], extra: list[str]) -> list[str]:
    """honcho gets the whole environment and no env file (the precedence above is applied); web gets PORT."""
    return ["honcho", "start", "--env", os.devnull, "--port", env["PORT"], *extra]


def main() -> None:
    env = with_defaults(merged_env(os.environ, os.environ.get("ENV_FILE", "").strip() or ".env"))
    ensure(env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL)
    print(f"tapedeck: {env['TAPEDECK_ENV']} mode, web on {env['PUBLIC_BASE_URL']} "
          f"(bound to {env.get('BIND_HOST') or '0.0.0.0'}), flower on port {env.get('FLOWER_PORT') or 5555}",
          flush=True)
    argv = honcho_argv(env, sys.argv[1:])
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
