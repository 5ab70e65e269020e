"""The OpenAPI document is one tools can trust: valid OpenAPI 3.1, every ``$ref`` resolving
inside it, and ids bounded to what the database can hold."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from bastion.api.openapi import DB_INT_MAX
from bastion.config import Settings
from bastion.db import Store
from bastion.server import create_app

DOC = create_app(Settings()).openapi()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_document_is_valid_openapi() -> None:
    validate(json.loads(json.dumps(DOC)))


def test_every_ref_resolves_to_components() -> None:
    refs = set(_refs(DOC))
    assert "#/components/schemas/Context" in refs  # the one that used to be #/$defs/Context
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert isinstance(_resolve(DOC, ref), dict), ref
    assert "$defs" not in json.dumps(DOC)


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def test_constraints_are_json_schema_keywords() -> None:
    """Pydantic writes a Field's ge/le under an Optional as "ge"/"le", which no tool reads."""
    assert not {"ge", "le", "gt", "lt"} & _keys(DOC["components"]["schemas"])
    quality = DOC["components"]["schemas"]["EntryIn"]["properties"]["quality"]["anyOf"][0]
    assert (quality["minimum"], quality["maximum"]) == (0, 100)


def test_every_integer_parameter_is_bounded() -> None:
    """An unbounded integer reaches the database (a 500 on a 64-bit overflow)."""
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                schema = param["schema"]
                ints = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "integer"]
                for s in ints:
                    where = f"{method.upper()} {path} {param['name']}"
                    assert "minimum" in s and "maximum" in s, where
                    assert s["maximum"] <= DB_INT_MAX, where


def test_a_405_says_what_is_allowed(api_store: Store, admin: dict[str, str]) -> None:
    with TestClient(create_app(Settings(rate_limit_per_minute=0), store=api_store)) as c:
        r = c.put("/v1/banks", headers=admin)
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, POST"
        r = c.request("OPTIONS", "/c/bank/X/content/1", headers=admin)
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, GET, PUT"
        assert r.headers["content-type"] == "application/problem+json"


def test_ids_beyond_64_bits_are_refused(api_store: Store, admin: dict[str, str]) -> None:
    """What the fuzzer found: GET /v1/pdata/builds/19571310043146842112 was a 500."""
    with TestClient(create_app(Settings(rate_limit_per_minute=0), store=api_store)) as c:
        for path in (
            "/v1/pdata/builds/19571310043146842112",
            f"/v1/reports/{2**63}",
            f"/c/bank/B/content/{2**64}",
        ):
            r = c.get(path, headers=admin)
            assert r.status_code == 422, (path, r.text)
        assert c.get(f"/v1/pdata/builds/{DB_INT_MAX}", headers=admin).status_code == 404
