"""The beat's housekeeping as plain code (no Celery): limits, stalled finalizes, orphaned uploads, compaction.

Each function is idempotent, never touches a recording that is recording or paused (except to stop it at a
limit), logs what it did, and returns it, so the thin tasks in tasks/maintenance.py only schedule and enqueue.
"""
