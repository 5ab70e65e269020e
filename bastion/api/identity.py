"""Identity sharing groups and identity bank entries over HTTP (docs/identity-signals.md).

A group's key is a secret: creating, importing, exporting and removing groups needs the `admin`
scope, and every one of those is audited; the key is shown only by an export. Adding identifiers
to a bank (`curate`) hashes each under the group's key as it arrives: the identifiers themselves
are never stored, logged or echoed back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from bastion.api.auth import require
from bastion.api.problems import AUTH_RESPONSES, problem_for, problem_responses
from bastion.api.v1 import IdentifierIn
from bastion.banks import NewEntry
from bastion.http_auth import Principal, client_address
from bastion.identity.model import Identifier, IdentifierError
from bastion.identity.store import IdentityGroup, group_name, parse_key
from bastion.runtime import RuntimeDep
from bastion.signals.base import SignalType
from bastion.store import StoreError

router = APIRouter(prefix="/v1", responses=AUTH_RESPONSES, tags=["identity"])
AdminKey = Annotated[Principal, Depends(require("admin"))]
CurateKey = Annotated[Principal, Depends(require("curate"))]
GROUP = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
GroupName = Annotated[str, PathParam(min_length=1, max_length=64, pattern=GROUP)]


class IdentityGroupOut(BaseModel):
    name: str
    key_id: str = Field(
        description="Public fingerprint of the group's key: members compare it to know they "
        "hold the same key."
    )
    created_at: datetime
    created_by: str


class IdentityGroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64, pattern=GROUP)
    key: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="Base64 of the 32-byte key another member shared (joining a group); "
        "omit to make a new group with a fresh random key.",
    )


class IdentityKeyOut(BaseModel):
    name: str
    key_id: str
    key: str = Field(description="Base64 of the group's 32-byte HMAC key. Keep it secret.")


class IdentifiersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    group: str = Field(..., min_length=1, max_length=64, pattern=GROUP)
    identifiers: list[IdentifierIn] = Field(..., min_length=1, max_length=10_000)
    labels: list[str] = Field(default_factory=list, max_length=64)
    source: str = Field("", max_length=255)
    list_name: str = Field("", max_length=255, alias="list")


class IdentifiersOut(BaseModel):
    added: int
    duplicates: int
    rejected: int
    errors: list[str] = Field(description="Per identifier, by position; never the identifier.")


def _out(g: IdentityGroup) -> IdentityGroupOut:
    return IdentityGroupOut(
        name=g.name, key_id=g.key_id, created_at=g.created_at, created_by=g.created_by
    )


@router.get(
    "/identity/groups", response_model=list[IdentityGroupOut], responses=problem_responses(503)
)
def list_groups(rt: RuntimeDep, _: CurateKey) -> list[IdentityGroupOut]:
    return [_out(g) for g in rt.identity.list()]


@router.post(
    "/identity/groups",
    response_model=IdentityGroupOut,
    status_code=201,
    responses=problem_responses(400, 409, 422, 503),
)
def create_group(
    body: IdentityGroupIn, request: Request, rt: RuntimeDep, principal: AdminKey
) -> IdentityGroupOut:
    """Make a sharing group, or join one with the key a member shared. Audited
    (``identity.group.create``, the key's public id only)."""
    try:
        key = parse_key(body.key) if body.key is not None else None
        group = rt.identity.create(
            body.name,
            key=key,
            actor=f"key:{principal.name}",
            remote_addr=client_address(request, rt.settings),
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    return _out(group)


@router.post(
    "/identity/groups/{name}/export-key",
    response_model=IdentityKeyOut,
    responses=problem_responses(404, 422, 503),
)
def export_key(
    name: GroupName, request: Request, rt: RuntimeDep, principal: AdminKey
) -> IdentityKeyOut:
    """The group's key, to hand to a partner joining the group over a safe channel. Audited
    (``identity.group.key.export``) before it is read."""
    try:
        group = rt.identity.get(name)
        key = rt.identity.export_key(
            group.name,
            actor=f"key:{principal.name}",
            remote_addr=client_address(request, rt.settings),
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    return IdentityKeyOut(name=group.name, key_id=group.key_id, key=key)


@router.delete(
    "/identity/groups/{name}", status_code=204, responses=problem_responses(404, 422, 503)
)
def delete_group(name: GroupName, request: Request, rt: RuntimeDep, principal: AdminKey) -> None:
    """Forget a group's key: its digests in banks then match nothing. Audited."""
    try:
        rt.identity.remove(
            group_name(name),
            actor=f"key:{principal.name}",
            remote_addr=client_address(request, rt.settings),
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc


@router.post(
    "/banks/{name}/identifiers",
    response_model=IdentifiersOut,
    responses=problem_responses(400, 404, 422, 503),
)
def add_identifiers(
    name: str, body: IdentifiersIn, request: Request, rt: RuntimeDep, principal: CurateKey
) -> IdentifiersOut:
    """Add account identifiers to a bank as keyed hashes under ``group``'s key. Each bad
    identifier gets its own error (by position, without the identifier) and the rest are
    added; entries are audited as any other (``bank.entries.add``)."""
    idents = [
        Identifier(SignalType(i.type), i.value, i.platform, i.region) for i in body.identifiers
    ]
    try:
        bank = rt.store.get_bank(name)
        digests = rt.identity.hash(body.group, idents)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    errors: list[str] = []
    entries: list[NewEntry] = []
    for i, (ident, value) in enumerate(zip(idents, digests, strict=True)):
        if isinstance(value, IdentifierError):
            errors.append(f"identifiers[{i}]: {value}")
            continue
        entries.append(
            NewEntry(
                signal_type=ident.type,
                value=value,
                source=body.source,
                list_name=body.list_name,
                labels=list(body.labels),
                metadata={"identity_group": group_name(body.group)},
            )
        )
    try:
        report = rt.store.add_entries(
            bank.name,
            entries,
            actor=f"key:{principal.name}",
            remote_addr=client_address(request, rt.settings),
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.index.refresh()
    return IdentifiersOut(
        added=report.added,
        duplicates=report.duplicates,
        rejected=len(errors) + report.error_count,
        errors=(errors + list(report.errors))[:100],
    )
