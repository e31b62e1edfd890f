"""The Celery app and thin tasks. Run with `celery -A tasks:celery_app worker`."""
from tasks import metrics as _metrics  # noqa: F401 - connects the worker's metric signals
from tasks import logs as _logs  # noqa: F401 - connects the worker's log format and task ids
from tasks.celery_app import celery_app

__all__ = ["celery_app"]
