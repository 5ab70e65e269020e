"""Bastion's Python SDK: the HTTP API as typed calls, so an integrator writes no HTTP.

    from bastion.sdk import Client

    with Client("https://bastion.example.org", api_key) as bastion:
        result = bastion.scan("upload.jpg", context={"uploader_id": "u1", "content_id": "c1"})
        if result.verdict.case_id:
            ...

:class:`Client` is synchronous, :class:`AsyncClient` the same calls awaited. Results are the
immutable models of :mod:`bastion.sdk.models`; errors are the exceptions of
:mod:`bastion.sdk.errors`, each carrying the server's problem details. See docs/sdk.md.
"""

from bastion.sdk.client import AsyncClient, Client, hashes
from bastion.sdk.errors import (
    ApiError,
    BastionError,
    BreakSuggested,
    CaseClosed,
    CaseLeased,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotLeased,
    RateLimited,
    RevealRequired,
    ServerError,
    TooLarge,
    TransportError,
    Unauthorized,
)
from bastion.sdk.models import (
    Bank,
    Case,
    CaseEvent,
    CaseItem,
    CasePage,
    CaseSummary,
    DecisionResult,
    Draft,
    EntriesAdded,
    Entry,
    Lease,
    LookupResult,
    Match,
    Media,
    QueueCount,
    Report,
    ReportFile,
    Revealed,
    ScanResult,
    Signal,
    Verdict,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Bank",
    "BastionError",
    "BreakSuggested",
    "Case",
    "CaseClosed",
    "CaseEvent",
    "CaseItem",
    "CaseLeased",
    "CasePage",
    "CaseSummary",
    "Client",
    "Conflict",
    "DecisionResult",
    "Draft",
    "EntriesAdded",
    "Entry",
    "Forbidden",
    "InvalidRequest",
    "Lease",
    "LookupResult",
    "Match",
    "Media",
    "NotFound",
    "NotLeased",
    "QueueCount",
    "RateLimited",
    "Report",
    "ReportFile",
    "RevealRequired",
    "Revealed",
    "ScanResult",
    "ServerError",
    "Signal",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "Verdict",
    "hashes",
]
