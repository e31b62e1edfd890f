"""Worker logs in the same shape as web's: Celery's handlers get tapedeck's formatter (LOG_FORMAT), and every
line written while a task runs carries its task id and the recording it works on (its first argument)."""
from __future__ import annotations

import logging
import re

from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_after_setup, task_postrun, task_prerun

from workers import logs
from workers.settings import get_settings


@after_setup_logger.connect
@after_setup_task_logger.connect
def use_tapedeck_format(logger: logging.Logger | None = None, **_: object) -> None:
    if logger is None:
        return
    formatter = logs.formatter(get_settings().log_format)
    for handler in logger.handlers:
        handler.setFormatter(formatter)


ROOM_IN_ARGSREPR = re.compile(r"(?:^|\s)room=(\S+)")
"""tasks/labels.py sends `room=<room> recording=<id>` as each job's argsrepr (what Flower shows)."""


@task_prerun.connect
def bind_task(task_id: str | None = None, task: object = None, args: tuple | None = None,
              kwargs: dict | None = None, **_: object) -> None:
    """task_id, the recording (first argument) and its room (from the job's argsrepr: no Redis call per task)."""
    first = args[0] if args else (kwargs or {}).get("recording_id")
    shown = getattr(getattr(task, "request", None), "argsrepr", None)
    room = ROOM_IN_ARGSREPR.search(shown) if isinstance(shown, str) else None
    logs.bind(task_id=task_id, recording_id=first if isinstance(first, str) else None,
              room=room.group(1) if room else None)


@task_postrun.connect
def unbind_task(**_: object) -> None:
    logs.clear()


@celeryd_after_setup.connect
def json_instead_of_banner(sender: str | None = None, instance: object = None, **_: object) -> None:
    """Under LOG_FORMAT=json the worker's ASCII-art start-up banner (some 40 plain lines) would break every line-wise
    JSON reader of the log: it is left out, and what it says that matters is one JSON line."""
    if instance is None or get_settings().log_format != "json":
        return
    instance.quiet = True  # type: ignore[attr-defined]
    queues = sorted(q.name for q in instance.app.amqp.queues.consume_from.values())  # type: ignore[attr-defined]
    logging.getLogger(__name__).info("worker %s starting: queues %s, concurrency %s", sender, ",".join(queues),
                                     getattr(instance, "concurrency", None))
