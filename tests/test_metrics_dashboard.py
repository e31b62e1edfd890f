"""docs/grafana-dashboard.json: a real dashboard whose every query names only metrics tapedeck exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\btapedeck_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def family_of(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_panel_queries_only_exported_metrics(client) -> None:
    """/metrics declares every family (web and worker share one definition module); each panel uses some."""
    text = client.get("/metrics").get_data(as_text=True)
    exported = {family_of(family.name) for family in text_string_to_metric_families(text)}
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert 12 <= len(panels) <= 30
    used: set[str] = set()
    for panel in panels:
        names = {family_of(name) for target in panel["targets"] for name in METRIC.findall(target["expr"])}
        assert names, f"panel {panel['title']!r} queries no tapedeck metric"
        assert names <= exported, f"panel {panel['title']!r} names {sorted(names - exported)}, not exported"
        used |= names
    assert used == {name for name in exported if name.startswith("tapedeck_")}, "a metric no panel shows"
