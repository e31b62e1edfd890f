"""The work itself: staging, Redis state, assembly and muxing. No Flask, no Celery."""
