"""docs/api.md is the API reference users have: every route it lists is served and described in /openapi.json, and
every described operation is listed; the docs a user's clone carries never point at files it does not have."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUTE_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", re.MULTILINE)


def _shape(path: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


@pytest.fixture(scope="module")
def spec(app) -> dict:
    return app.test_client().get("/openapi.json").get_json()


@pytest.fixture(scope="module")
def listed() -> set[tuple[str, str]]:
    rows = {(method, _shape(path)) for method, path in ROUTE_ROW.findall((ROOT / "docs" / "api.md").read_text())}
    assert len(rows) > 10, "the routes table of docs/api.md was not found"
    return rows


def test_every_listed_route_is_described_or_is_a_websocket(app, spec, listed):
    described = {(method.upper(), _shape(path)) for path, item in spec["paths"].items() for method in item}
    websockets = {("GET", _shape(rule.rule)) for rule in app.url_map.iter_rules() if rule.websocket}
    assert sorted(listed - described - websockets) == [], "listed in docs/api.md but not in /openapi.json"
    assert websockets <= listed, "a WebSocket route (OpenAPI cannot describe it) is missing from docs/api.md"


def test_every_described_operation_is_listed(spec, listed):
    described = {(method.upper(), _shape(path)) for path, item in spec["paths"].items() for method in item}
    assert sorted(described - listed) == [], "in /openapi.json but not in the routes table of docs/api.md"


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                     for p in (ROOT / "docs").glob("*.md"))])
def test_docs_refer_only_to_what_a_clone_has(doc):
    text = (ROOT / doc).read_text()
    assert "../shared" not in text and "DESIGN.md" not in text and "FIELD-NOTES" not in text
    for target in re.findall(r"\]\(((?!https?://|#)[^)#\s]+)", text):  # relative Markdown links
        assert (ROOT / doc).parent.joinpath(target).resolve().exists(), f"{doc} links to missing {target}"
