"""The worker's exporter (Procfile worker line, two pool processes): task failures and finalize time, summed."""
from __future__ import annotations

import json
import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.procfile import procfile_command
from tests.services import VENV_BIN, CeleryProcess, free_port, wait_until

QUEUE = "metrics-test"
FINALIZE = "tapedeck.finalize_recording"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_exports_failures_and_finalize_time(stack_env, tmp_path) -> None:
    from tasks import celery_app

    port = free_port()
    env = {**os.environ, **stack_env, "WORKER_METRICS_PORT": str(port), "METRICS_DIR": str(tmp_path / "metrics"), "LOG_FORMAT": "json",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    line = f"{procfile_command('worker')} -Q {QUEUE} --without-gossip --without-mingle --hostname metrics-{port}@%h"
    worker = CeleryProcess(env, tmp_path / "worker.log", argv=["bash", "-c", line])
    try:
        worker.wait_ready()
        sent = [celery_app.send_task(FINALIZE, args=[], queue=QUEUE).id for _ in range(3)]
        # a finalize called without its recording id: a failure, timed like any finalize
        failures = ("tapedeck_task_failures_total", (("task", FINALIZE),))
        wait_until(lambda: scrape(port).get(failures) == 3, 60, interval=0.2, what="three failures exported")
        samples = scrape(port)
        assert samples[("tapedeck_finalize_duration_seconds_count", ())] == 3
        assert list((tmp_path / "metrics").glob(f"worker-{port}/counter_*.db"))
        lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
        assert {line.get("task_id") for line in lines if line["level"] == "ERROR"} >= set(sent), "JSON lines with task ids"
    finally:
        worker.stop()
