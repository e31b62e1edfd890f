"""/openapi.json: valid OpenAPI 3.1, one entry per Flask route and back, errors and limits stated, docs/api.md in step."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
UNDOCUMENTED = ("/static/",)
"""Served files, not API: the browser module and the demo's assets."""
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def _shape(path: str) -> str:
    """A path with every parameter replaced by {}: Flask's <conv:name> and OpenAPI's {name} compare equal."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


@pytest.fixture(scope="module")
def spec(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_openapi_is_open_and_valid(spec: dict) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_route_is_described_and_nothing_else(app, spec: dict) -> None:
    routes = {(_shape(rule.rule), method) for rule in app.url_map.iter_rules()
              if not rule.rule.startswith(UNDOCUMENTED) and not rule.websocket  # OpenAPI has no WebSockets: docs/api.md
              for method in rule.methods - IMPLICIT_METHODS}
    described = {(_shape(path), method.upper()) for path, item in spec["paths"].items() for method in item}
    assert sorted(routes - described) == [], "routes missing from /openapi.json"
    assert sorted(described - routes) == [], "described in /openapi.json but not routed"


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield path, method, op


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def test_every_error_response_has_the_error_schema(spec: dict) -> None:
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            schema = _resolve(spec, response)["content"]["application/json"]["schema"]
            refs = [part.get("$ref") for part in schema.get("allOf", [schema])]
            assert "#/components/schemas/Error" in refs, f"{method.upper()} {path} {status}"


def test_query_token_only_on_get_routes(spec: dict) -> None:
    for path, method, op in _operations(spec):
        schemes = {name for requirement in op["security"] for name in requirement}
        if method != "get":
            assert "tokenQuery" not in schemes, f"{method.upper()} {path} must take its token in the header only"
        if schemes:
            assert "bearer" in schemes and "401" in op["responses"], f"{method.upper()} {path}"


def test_limits_are_stated(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["Id"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert (schemas["Sequence"]["minimum"], schemas["Sequence"]["maximum"]) == (0, 10_000_000)
    assert (schemas["Timestamp"]["minimum"], schemas["Timestamp"]["maximum"]) == (0, 4_102_444_800_000)
    assert schemas["StreamType"]["enum"] == ["video", "audio"]


def test_docs_describe_every_operation_code_and_state(spec: dict) -> None:
    text = DOCS.read_text()
    for path, method, _ in _operations(spec):
        assert f"`{method.upper()} {path}`" in text, f"docs/api.md lacks `{method.upper()} {path}`"
    codes = {code for response in spec["components"]["responses"].values()
             for code in response["content"]["application/json"]["schema"]["allOf"][1]
             ["properties"]["error"]["properties"]["code"]["enum"]}
    for code in codes:
        assert f"`{code}`" in text, f"docs/api.md lacks error code `{code}`"
    for state in spec["components"]["schemas"]["State"]["enum"]:
        assert f"`{state}`" in text, f"docs/api.md lacks state `{state}`"
    assert "../shared" not in text and "DESIGN.md" not in text
