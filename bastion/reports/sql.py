"""The reports' tables and the SQL every report store and the reporter share: loading a report,
finding a case's report, which reports a reporter may run, the sealing contexts (AAD), and
:class:`ReportBase`, the reading half of :class:`bastion.reports.store.ReportStore`."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.banks.model import utcnow
from bastion.crypto import MasterKey, UnsealError, unseal
from bastion.reports.errors import ReportDataMissing, ReportNotFound
from bastion.reports.model import (
    ACTIVE_STATES,
    AUTHORITY_NCMEC,
    IpCaptureEvent,
    Report,
    ReportFile,
    ReportFileInfo,
)
from bastion.reports.nca import AUTHORITY_NCA
from bastion.reports.rows import ReportCredentialRow, ReportFileRow, ReportRow
from bastion.review.rows import CaseMediaRow
from bastion.review.store import media_aad
from bastion.store import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.db import Store


reports_t = ReportRow.__table__
files_t = ReportFileRow.__table__
creds_t = ReportCredentialRow.__table__
media_t = CaseMediaRow.__table__
SYSTEM = "system"
MAX_ERROR = 1000


class ReportBase:
    """Reports on a :class:`Store`: reading them and their sealed parts. ``settings`` supplies
    env-var credentials and defaults."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey,
        *,
        settings: Any = None,
        clock: Callable[[], datetime] = utcnow,
        vault: Any = None,
    ) -> None:
        """``vault`` (a :class:`bastion.vault.store.Vault`), when given, is told of every
        finished report in the same transaction, so evidence retention runs from the report."""
        self.store = store
        self.master_key = master_key
        self.settings = settings
        self.clock = clock
        self.vault = vault

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise StoreUnavailable(f"report store: {first}") from exc

    def _media(self, conn: Connection, case_id: int, item_id: int) -> bytes:
        sealed = conn.execute(
            select(media_t.c.sealed).where(media_t.c.item_id == item_id)
        ).scalar_one_or_none()
        if sealed is None:
            raise ReportDataMissing(f"case item {item_id} has no stored media")
        try:
            return unseal(self.master_key, sealed, media_aad(case_id, item_id))
        except UnsealError:
            raise ReportDataMissing(f"case item {item_id}'s media does not open") from None

    # -- reading -------------------------------------------------------------------------------

    def get(self, report_id: int) -> Report:
        with self._tx() as conn:
            return load_report(conn, report_id)

    def for_case(self, case_id: int, authority: str = AUTHORITY_NCMEC) -> Report | None:
        with self._tx() as conn:
            existing = existing_id(conn, case_id, authority)
            return None if existing is None else load_report(conn, existing)

    def list(self, *, state: str | None = None, limit: int = 100) -> builtins.list[Report]:
        q = select(reports_t.c.id).order_by(reports_t.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(reports_t.c.state == state)
        with self._tx() as conn:
            return [load_report(conn, int(i)) for i in conn.execute(q).scalars()]

    def report_xml(self, report_id: int) -> bytes:
        """The sealed report document (for the reporter; never shown in the console)."""
        with self._tx() as conn:
            row = conn.execute(
                select(reports_t.c.case_id, reports_t.c.report_sealed).where(
                    reports_t.c.id == report_id
                )
            ).first()
        if row is None:
            raise ReportNotFound(f"no report {report_id}")
        return unseal(self.master_key, row.report_sealed, report_aad(row.case_id))

    def file_details(self, case_id: int, file_row: Any) -> ReportFile:
        data = json.loads(
            unseal(self.master_key, file_row.details_sealed, file_aad(case_id, file_row.item_id))
        )
        ip = data.pop("ip_event", None)
        return ReportFile(**data, ip_event=IpCaptureEvent(**ip) if ip else None)


def runnable(now: datetime) -> Any:
    return and_(
        reports_t.c.authority == AUTHORITY_NCMEC,  # NCA reports go through the portal by hand
        reports_t.c.state.in_([s.value for s in ACTIVE_STATES]),
        or_(reports_t.c.locked_until.is_(None), reports_t.c.locked_until <= now),
    )


def existing_id(conn: Connection, case_id: int, authority: str = AUTHORITY_NCMEC) -> int | None:
    found = conn.execute(
        select(reports_t.c.id).where(
            reports_t.c.case_id == case_id, reports_t.c.authority == authority
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def raw_report(conn: Connection, report_id: int) -> tuple[Any, builtins.list[Any]]:
    row = conn.execute(select(reports_t).where(reports_t.c.id == report_id)).first()
    if row is None:
        raise ReportNotFound(f"no report {report_id}")
    files = conn.execute(
        select(files_t).where(files_t.c.report_id == report_id).order_by(files_t.c.position)
    ).all()
    return row, builtins.list(files)


def load_report(conn: Connection, report_id: int) -> Report:
    row, files = raw_report(conn, report_id)
    m = row._mapping
    return Report(
        id=int(m["id"]),
        case_id=int(m["case_id"]),
        authority=m["authority"],
        environment=m["environment"],
        state=m["state"],
        incident_type=m["incident_type"],
        external_id=m["external_id"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        last_response_code=m["last_response_code"],
        retract_reason=m["retract_reason"],
        created_by=m["created_by"],
        confirmed_at=m["confirmed_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        submitted_at=m["submitted_at"],
        finished_at=m["finished_at"],
        retracted_at=m["retracted_at"],
        files=tuple(
            ReportFileInfo(
                int(f.id),
                int(f.item_id),
                int(f.position),
                f.state,
                f.external_id,
                f.uploaded_at,
                f.described_at,
            )
            for f in files
        ),
        priority=m["priority"],
        deadline_at=m["deadline_at"],
        keep_until=m["keep_until"],
    )


def report_aad(case_id: int) -> bytes:
    return f"bastion/report/v1:case={case_id}:authority={AUTHORITY_NCMEC}".encode()


def file_aad(case_id: int, item_id: int) -> bytes:
    return f"bastion/report-file/v1:case={case_id}:item={item_id}".encode()


def nca_aad(case_id: int) -> bytes:
    return f"bastion/report/v1:case={case_id}:authority={AUTHORITY_NCA}".encode()


def cred_aad(authority: str) -> bytes:
    return f"bastion/report-credentials/v1:{authority}".encode()


def clip(text: str, limit: int = MAX_ERROR) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"
