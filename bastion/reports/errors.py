"""Report errors; their messages are content-free."""

from __future__ import annotations

from bastion.store import StoreError


class ReportError(StoreError):
    """Base for report errors; messages are content-free."""


class ReportNotFound(ReportError, LookupError):
    pass


class ReportExists(ReportError):
    """The case already has a report to this authority (there is never a second one)."""

    def __init__(self, report_id: int) -> None:
        super().__init__(f"this case already has report {report_id}")
        self.report_id = report_id


class ReportConflict(ReportError):
    """The report's state does not allow the request (e.g. retracting a finished report)."""


class ReportDataMissing(ReportError):
    """A file's stored media is gone or does not open; the report cannot be completed."""


__all__ = ["ReportConflict", "ReportDataMissing", "ReportError", "ReportExists", "ReportNotFound"]
