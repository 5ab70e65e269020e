"""What an API key learns about bank contents: stored hash values.

Hash values in a bank are what the ``export`` scope guards; a key without it must not get them
by any route. Keys with ``export`` (or ``admin``) could export the bank outright, so they see
values, and every read of a value is audited (who, which bank, which entries).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request

from bastion.api.auth import Principal


def sees_values(principal: Principal) -> bool:
    """Whether this key may read stored hash values."""
    return principal.allows("export")


def audit_values(
    rt: Any,
    request: Request,
    principal: Principal,
    action: str,
    target: str,
    ids: Iterable[int],
    **detail: Any,
) -> None:
    """Record a read of stored values: who (the key), which bank (``target``), which entries."""
    rt.audit(request, principal, action, target, ids=sorted(set(ids)), **detail)
