"""The Procfile's `flower` process: Flower, but never open to the network in production.

Flower lets anyone who reaches it inspect and run tasks. In production (TAPEDECK_ENV unset or
`production`) this refuses to start unless Flower's own authentication is configured:
`FLOWER_BASIC_AUTH=user:password[,user2:password2]`, or its OAuth settings (FLOWER_AUTH,
FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_KEY, FLOWER_OAUTH2_SECRET, FLOWER_OAUTH2_REDIRECT_URI).
In development it binds 127.0.0.1 unless FLOWER_ADDRESS or BIND_HOST says otherwise. It then
execs `celery -A tasks:celery_app flower` (found on PATH) with any extra arguments.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

LOOPBACK = "127.0.0.1"
OAUTH_VARIABLES = ("FLOWER_AUTH", "FLOWER_AUTH_PROVIDER", "FLOWER_OAUTH2_KEY", "FLOWER_OAUTH2_SECRET",
                   "FLOWER_OAUTH2_REDIRECT_URI")
"""Flower 2.2 needs all of these for OAuth: without a provider or redirect nobody can log in."""

TASKS_COLUMNS = "name,uuid,state,args,received,started,runtime,worker"
"""Flower's task list with the args column (hidden by default): tapedeck's tasks show `room=<room> recording=<id>`
there, so a job is found by either; FLOWER_TASKS_COLUMNS overrides it."""

REFUSAL = (
    "flower: refusing to start in production without authentication (anyone reaching it could run tasks). "
    "Set FLOWER_BASIC_AUTH=user:password, or Flower's OAuth settings ({oauth}); "
    "for a local dashboard use TAPEDECK_ENV=development (bound to 127.0.0.1)."
)


def _value(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def basic_auth_ok(raw: str) -> bool:
    """Every comma-separated entry is user:password with neither part empty."""
    entries = [entry for entry in raw.split(",") if entry.strip()]
    return bool(entries) and all(user and password for user, _, password in (e.partition(":") for e in entries))


def authenticated(env: Mapping[str, str]) -> bool:
    """True when Flower will ask every client for credentials (basic auth or a complete OAuth setup)."""
    return basic_auth_ok(_value(env, "FLOWER_BASIC_AUTH")) or all(_value(env, name) for name in OAUTH_VARIABLES)


def refusal(env: Mapping[str, str]) -> str | None:
    """Why this process must not start, or None. Anything but TAPEDECK_ENV=development is production."""
    if _value(env, "TAPEDECK_ENV") == "development" or authenticated(env):
        return None
    return REFUSAL.format(oauth=", ".join(OAUTH_VARIABLES))


def flower_argv(env: Mapping[str, str], extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The celery command line and the variables to add: loopback and an open API only in development."""
    argv = ["celery", "-A", "tasks:celery_app", "flower", f"--port={_value(env, 'FLOWER_PORT') or 5555}"]
    added: dict[str, str] = {}
    if _value(env, "TAPEDECK_ENV") == "development":
        address = _value(env, "FLOWER_ADDRESS") or _value(env, "BIND_HOST") or LOOPBACK
        added["FLOWER_ADDRESS"] = address
        if address == LOOPBACK and not authenticated(env) and not _value(env, "FLOWER_UNAUTHENTICATED_API"):
            added["FLOWER_UNAUTHENTICATED_API"] = "true"  # the dashboard's buttons call /api; only local users reach it
    elif _value(env, "BIND_HOST") and not _value(env, "FLOWER_ADDRESS"):
        added["FLOWER_ADDRESS"] = _value(env, "BIND_HOST")
    if not _value(env, "FLOWER_TASKS_COLUMNS"):
        added["FLOWER_TASKS_COLUMNS"] = TASKS_COLUMNS
    return argv + extra, added


def main() -> None:
    problem = refusal(os.environ)
    if problem:
        sys.exit(problem)
    argv, added = flower_argv(os.environ, sys.argv[1:])
    os.environ.update(added)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
