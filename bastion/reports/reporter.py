"""The CyberTipline reporter: runs each due report's next step against NCMEC and records the
result in its own transaction before the next call (see :mod:`bastion.reports.store`)."""

from __future__ import annotations

import builtins
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, select, update

from bastion.reports.errors import ReportDataMissing
from bastion.reports.model import FileProgress, FileState, Report, State, Step, StepKind, next_step
from bastion.reports.ncmec import NcmecError, Uploaded
from bastion.reports.ncmec_xml import build_file_details
from bastion.reports.sql import SYSTEM, clip, files_t, load_report, raw_report, reports_t, runnable
from bastion.reports.store import ReportStore
from bastion.store import InvalidInput, append_audit


class CyberTipline(Protocol):
    def submit(self, report_xml: bytes) -> str: ...
    def upload(self, report_id: str, filename: str, data: bytes) -> Uploaded: ...
    def fileinfo(self, details_xml: bytes) -> None: ...
    def finish(self, report_id: str) -> builtins.list[str]: ...
    def retract(self, report_id: str) -> None: ...


class _LeaseLost(Exception):
    pass


class Reporter:
    """Runs reports' steps against a CyberTipline client. ``after_record(n, step)`` is called
    after the n-th step's result is committed (tests raise from it to simulate a crash)."""

    def __init__(
        self,
        reports: ReportStore,
        client: CyberTipline,
        *,
        worker_id: str | None = None,
        max_attempts: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        lease: timedelta = timedelta(minutes=10),
        rng: random.Random | None = None,
        after_record: Callable[[int, Step], None] | None = None,
    ) -> None:
        s = reports.settings
        self.reports = reports
        self.client = client
        self.worker_id = worker_id or f"reporter-{secrets.token_hex(6)}"
        self.max_attempts = max_attempts or int(getattr(s, "ncmec_max_attempts", 8))
        self.backoff_base = backoff_base or float(getattr(s, "ncmec_backoff_seconds", 30.0))
        self.backoff_cap = backoff_cap or float(getattr(s, "ncmec_backoff_max_seconds", 3600.0))
        self.lease = lease
        self.rng = rng or random.Random()
        self.after_record = after_record
        if self.max_attempts < 1:
            raise InvalidInput("max_attempts must be at least 1")

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.reports.clock

    def run_due(self, limit: int = 20) -> builtins.list[Report]:
        """Run every report whose next attempt is due (and that no live reporter holds)."""
        now = self.clock()
        with self.reports._tx() as conn:
            ids = builtins.list(
                conn.execute(
                    select(reports_t.c.id)
                    .where(runnable(now), reports_t.c.next_attempt_at <= now)
                    .order_by(reports_t.c.next_attempt_at, reports_t.c.id)
                    .limit(limit)
                ).scalars()
            )
        return [self.run(int(i)) for i in ids]

    def run(self, report_id: int) -> Report:
        """Take the report's lease and execute steps until it is finished, retracted, failed,
        or a call fails (then the failure and the next attempt time are recorded)."""
        if not self._claim(report_id):
            return self.reports.get(report_id)
        n = 0
        try:
            while True:
                with self.reports._tx() as conn:
                    row, files = raw_report(conn, report_id)
                step = next_step(
                    State(row.state),
                    [FileProgress(f.id, f.position, FileState(f.state)) for f in files],
                )
                if step is None:
                    break
                try:
                    result = self._execute(step, row, files)
                except (NcmecError, ReportDataMissing) as exc:
                    if self._failed(row, step, exc):
                        continue  # now retracting: retract at once, still holding the lease
                    break
                self._record(row, step, result)
                if self.after_record is not None:
                    self.after_record(n, step)
                n += 1
        except _LeaseLost:
            return self.reports.get(report_id)
        self._release(report_id)
        return self.reports.get(report_id)

    # -- steps ---------------------------------------------------------------------------------

    def _execute(self, step: Step, row: Any, files: builtins.list[Any]) -> Any:
        if step.kind == StepKind.SUBMIT:
            return self.client.submit(self.reports.report_xml(row.id))
        if step.kind in (StepKind.UPLOAD, StepKind.FILEINFO):
            f = next(f for f in files if f.id == step.file_id)
            info = self.reports.file_details(row.case_id, f)
            if step.kind == StepKind.UPLOAD:
                with self.reports._tx() as conn:
                    data = self.reports._media(conn, row.case_id, f.item_id)
                return self.client.upload(row.external_id, info.original_file_name, data)
            return self.client.fileinfo(build_file_details(row.external_id, f.external_id, info))
        if step.kind == StepKind.FINISH:
            return self.client.finish(row.external_id)
        return self.client.retract(row.external_id)

    def _record(self, row: Any, step: Step, result: Any) -> None:
        now = self.clock()
        mine = and_(
            reports_t.c.id == row.id,
            reports_t.c.locked_by == self.worker_id,
            reports_t.c.state == row.state,
        )
        base = {"attempts": 0, "last_error": None, "last_response_code": None, "updated_at": now}
        with self.reports._tx() as conn:
            if step.kind == StepKind.SUBMIT:
                values = {
                    "state": State.SUBMITTED.value,
                    "external_id": result,
                    "submitted_at": now,
                }
                audit = ("report.submit", {"ncmec_report_id": result})
            elif step.kind == StepKind.UPLOAD:
                values = {}
                audit = ("report.upload", {"file": step.file_id, "ncmec_file_id": result.file_id})
            elif step.kind == StepKind.FILEINFO:
                values = {}
                audit = ("report.fileinfo", {"file": step.file_id})
            elif step.kind == StepKind.FINISH:
                values = {"state": State.FINISHED.value, "finished_at": now}
                audit = ("report.finish", {"ncmec_report_id": row.external_id})
            else:
                values = {"state": State.RETRACTED.value, "retracted_at": now}
                audit = ("report.retract", {"ncmec_report_id": row.external_id})
            if not conn.execute(update(reports_t).where(mine).values(**base, **values)).rowcount:
                raise _LeaseLost()
            if step.kind == StepKind.UPLOAD:
                conn.execute(
                    update(files_t)
                    .where(files_t.c.id == step.file_id, files_t.c.state == FileState.PENDING)
                    .values(
                        state=FileState.UPLOADED.value,
                        external_id=result.file_id,
                        uploaded_at=now,
                    )
                )
            elif step.kind == StepKind.FILEINFO:
                conn.execute(
                    update(files_t)
                    .where(files_t.c.id == step.file_id, files_t.c.state == FileState.UPLOADED)
                    .values(state=FileState.DESCRIBED.value, described_at=now)
                )
                left = conn.execute(
                    select(files_t.c.id).where(
                        files_t.c.report_id == row.id, files_t.c.state != FileState.DESCRIBED
                    )
                ).first()
                if left is None:
                    conn.execute(
                        update(reports_t)
                        .where(reports_t.c.id == row.id)
                        .values(state=State.FILES_UPLOADED.value)
                    )
            if step.kind == StepKind.FINISH and self.reports.vault is not None:
                # The report restarts the evidence's retention clock, committed with it.
                self.reports.vault.mark_reported_in(
                    conn,
                    int(row.case_id),
                    reported_at=now,
                    jurisdiction="US",
                    reference=str(row.external_id),
                    actor=SYSTEM,
                )
            append_audit(
                conn, actor=SYSTEM, action=audit[0], target=f"report:{row.id}", detail=audit[1]
            )

    def _failed(self, row: Any, step: Step, exc: Exception) -> bool:
        """Record a failed call; True when the report moved to retracting (lease kept)."""
        now = self.clock()
        attempts = int(row.attempts) + 1
        retryable = getattr(exc, "retryable", False)
        code = getattr(exc, "response_code", None)
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": clip(str(exc)),
            "last_response_code": code,
            "updated_at": now,
            "locked_by": None,
            "locked_until": None,
        }
        action = "report.attempt_failed"
        if retryable and attempts < self.max_attempts:
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempts - 1))
            values["next_attempt_at"] = now + timedelta(seconds=delay * self.rng.uniform(0.5, 1))
        elif row.state in (State.SUBMITTED, State.FILES_UPLOADED):
            # NCMEC holds an open report we cannot complete: retract it (next run does).
            values.update(
                state=State.RETRACTING.value,
                attempts=0,
                next_attempt_at=now,
                retract_reason=f"could not complete the report: {clip(str(exc), 300)}",
                locked_by=self.worker_id,
                locked_until=now + self.lease,
            )
            action = "report.unfinishable"
        else:
            values["state"] = State.FAILED.value
            action = "report.failed"
        with self.reports._tx() as conn:
            done = conn.execute(
                update(reports_t)
                .where(
                    reports_t.c.id == row.id,
                    reports_t.c.locked_by == self.worker_id,
                    reports_t.c.state == row.state,
                )
                .values(**values)
            ).rowcount
            if not done:
                raise _LeaseLost()
            append_audit(
                conn,
                actor=SYSTEM,
                action=action,
                target=f"report:{row.id}",
                detail={
                    "step": step.kind.value,
                    "attempts": attempts,
                    "response_code": code,
                    "error": clip(str(exc), 300),
                },
            )
        return values.get("state") == State.RETRACTING.value

    # -- leases --------------------------------------------------------------------------------

    def _claim(self, report_id: int) -> bool:
        now = self.clock()
        with self.reports._tx() as conn:
            load_report(conn, report_id)  # ReportNotFound
            return bool(
                conn.execute(
                    update(reports_t)
                    .where(reports_t.c.id == report_id, runnable(now))
                    .values(locked_by=self.worker_id, locked_until=now + self.lease)
                ).rowcount
            )

    def _release(self, report_id: int) -> None:
        with self.reports._tx() as conn:
            conn.execute(
                update(reports_t)
                .where(reports_t.c.id == report_id, reports_t.c.locked_by == self.worker_id)
                .values(locked_by=None, locked_until=None)
            )


__all__ = ["CyberTipline", "Reporter"]
