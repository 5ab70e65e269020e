"""What makes the OpenAPI document one that generators and fuzzers can trust: ids bounded to
what the database holds, every ``$ref`` resolvable from ``#/components/schemas``, and 405s that
say which methods the path does allow."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from fastapi import Path, Query
from pydantic import BeforeValidator, Field, Strict
from starlette.requests import Request
from starlette.routing import Match

_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
#: The largest id a database row can carry (a signed 64-bit integer on PostgreSQL and SQLite).
DB_INT_MAX = 2**63 - 1
#: The largest id a JSON body may carry: every integer up to 2**53 - 1 is exact as a JSON number
#: in any parser (RFC 7493, I-JSON); above it ``9223372036854775807`` and ``9.223372036854776e18``
#: are the same number to some, so a bound of 2**63 - 1 could not be stated exactly.
JSON_INT_MAX = 2**53 - 1

#: A row id in a path: anything outside 1..2**63-1 is refused (422) before it reaches the database.
IdPath = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
#: An id cursor in a query ("after this id"): 0 means from the start.
CursorQuery = Annotated[int, Query(ge=0, le=DB_INT_MAX)]

#: Text a database column can hold: no NUL (PostgreSQL refuses it). A JSON Schema pattern, so
#: the document states what the store checks.
NO_NUL = r"^[^\x00]*$"
#: A URL Bastion may fetch: http or https (the fetch policy checks the rest).
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://"
#: A bank name (``bastion.banks.model.BANK_NAME_RE``, which ignores case).
BANK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: A label (``normalize_labels``): not blank, no ';' (the CSV separator), newline or NUL.
Label = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[^;\n\x00]*[^\s;\x00][^;\n\x00]*$")
]


def _whole(value: Any) -> Any:
    """JSON Schema calls 3.0 an integer; so does the API. Booleans and strings stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer in a JSON body: a whole number, written ``3`` or ``3.0``, never ``true`` or ``"3"``.
WholeInt = Annotated[int, Strict(), BeforeValidator(_whole)]


def whole_int(ge: int, le: int) -> Any:
    """:data:`WholeInt` from ``ge`` to ``le``. The bounds come before the validator, so the
    document states them as minimum and maximum (after it, Pydantic writes "ge" and "le")."""
    return Annotated[int, Strict(), Ge(ge), Le(le), BeforeValidator(_whole)]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path (RFC 9110 ``Allow`` of a 405).

    Starlette names only the methods of the first route whose path matched; FastAPI has one
    route per method, so each method is tried against the router on its own.
    """
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def hoist_defs(doc: dict[str, Any]) -> None:
    """Move every ``$defs`` nested in the document (Pydantic leaves them in schemas given to
    ``openapi_extra``) into ``components/schemas``, and point their ``#/$defs/...`` references
    there: a ``#/$defs/`` reference resolves against the document's root, where nothing is."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            defs = node.pop("$defs", None)
            if isinstance(defs, dict):
                for name, schema in defs.items():
                    walk(schema)
                    existing = schemas.setdefault(name, schema)
                    if existing != schema:
                        raise ValueError(f"two different schemas are both named {name!r}")
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc.get("paths", {}))
    walk(list(schemas.values()))


def state_settings(app: Any, settings: Any) -> None:
    """Put the limits this deployment's settings choose into its document (generated once)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        vouchers = doc["components"]["schemas"].get("VouchersIn", {}).get("properties", {})
        if "vouchers" in vouchers:
            vouchers["vouchers"]["maxItems"] = int(settings.voucher_max_batch)
        return doc

    app.openapi = openapi
