"""The banks' own store error: an import whose entry stream failed midway."""

from __future__ import annotations

from bastion.banks.model import ImportReport
from bastion.store.errors import StoreError


class ImportAborted(StoreError):
    """The entry stream itself failed midway (I/O error, database gone). Batches committed before
    the failure stay stored; ``report`` says how far it got."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report
