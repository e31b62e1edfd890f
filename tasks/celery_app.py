"""The one Celery app; configuration comes from celeryconfig.py (which reads the environment)."""
from __future__ import annotations

from celery import Celery

celery_app = Celery("tapedeck", include=["tasks.finalize", "tasks.lifecycle", "tasks.live", "tasks.live_consumer", "tasks.maintenance", "tasks.startup", "tasks.webhooks"])
celery_app.config_from_object("celeryconfig")
