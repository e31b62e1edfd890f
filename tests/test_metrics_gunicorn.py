"""/metrics of the Procfile's web line (two gunicorn workers): counts match what was sent, whichever worker took it."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.media import WEBM_HEADER
CHUNKS = 24


def scrape(server) -> dict[tuple[str, tuple], float]:
    reply = server.request("GET", "/metrics")
    assert reply.status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.body.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counts_match_across_two_workers(live_gunicorn, api, rec) -> None:
    before = scrape(live_gunicorn)
    headers = {**api.auth("alice", "participant"), "Content-Type": "application/octet-stream",
               "Connection": "close"}
    sizes = [len(WEBM_HEADER)] + [100 + n for n in range(1, CHUNKS)]
    for sequence, size in enumerate(sizes):
        data = WEBM_HEADER if sequence == 0 else bytes([sequence % 256]) * size
        url = f"/video-calls/recordings/{rec}/participants/alice/video/chunks/{sequence}"
        reply = live_gunicorn.request("PUT", url, headers=headers, body=data)  # a new connection each time
        assert reply.status == 202, reply.body
    scrapes = [scrape(live_gunicorn) for _ in range(4)]  # several scrapes: whichever worker answers, one total
    for after in scrapes:
        received = value(after, "tapedeck_chunks_received_total", type="video")
        assert received - value(before, "tapedeck_chunks_received_total", type="video") == CHUNKS
        assert value(after, "tapedeck_bytes_received_total") - value(before, "tapedeck_bytes_received_total") == sum(sizes)
        latency = value(after, "tapedeck_upload_latency_seconds_count")
        assert latency - value(before, "tapedeck_upload_latency_seconds_count") == CHUNKS
