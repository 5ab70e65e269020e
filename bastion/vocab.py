"""The words every part of Bastion shares, defined once: console roles, case priorities and their
default review deadlines, and the age bands a platform may say a user is in.

Pure: no imports from the rest of Bastion, so any module (a domain model, the policy, an edge)
can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

Role = Literal["admin", "senior_reviewer", "reviewer", "auditor"]
ADMIN, SENIOR_REVIEWER, REVIEWER, AUDITOR = "admin", "senior_reviewer", "reviewer", "auditor"
#: Every console role, most powerful first.
ROLES: tuple[str, ...] = (ADMIN, SENIOR_REVIEWER, REVIEWER, AUDITOR)

Priority = Literal["critical", "high", "normal", "low"]
#: Most urgent first: queues are worked in this order, and the database stores the index (rank)
#: so cases sort by it.
PRIORITIES: tuple[Priority, ...] = ("critical", "high", "normal", "low")
#: How long a case of each priority may wait for a decision when the policy does not say.
DEFAULT_SLA: Mapping[str, timedelta] = {
    "critical": timedelta(hours=1),
    "high": timedelta(hours=4),
    "normal": timedelta(hours=24),
    "low": timedelta(hours=72),
}

AgeBand = Literal["under13", "13-15", "16-17", "adult", "unknown"]
#: The age bands a scan's context may carry (``age_band``), youngest first.
AGE_BANDS: tuple[AgeBand, ...] = ("under13", "13-15", "16-17", "adult", "unknown")
