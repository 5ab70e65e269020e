"""Server side of private matching for end-to-end encrypted messaging.

Pure (no web or database): ``build`` makes pdata from bank hashes, ``process`` opens vouchers
with the secret scalar, ``threshold`` finds real shares and rebuilds an account key, ``media``
re-encodes opened derivatives, ``franking`` verifies user reports, ``records`` holds what the
store hands out. Storage: ``store`` (:class:`~bastion.psi.store.VoucherStore`, made of
``tables``, ``intake``, ``opening`` and its franking part) and ``rows`` (the tables); this
package's ``__init__`` imports neither.
The wire formats and everything a client computes live in :mod:`bastion.client`, which this
package imports (never the reverse). Protocol and privacy properties: docs/e2ee.md.
"""

from bastion.psi.build import BuildError, BuildStats, build_pdata
from bastion.psi.franking import Report, ReportRejected, platform_tag, verify_report
from bastion.psi.process import Opened, open_parsed, open_voucher
from bastion.psi.secret import ServerSecret
from bastion.psi.threshold import (
    Row,
    Undecodable,
    dependencies,
    detect_real,
    distinct_images,
    reconstruct,
)

__all__ = [
    "BuildError",
    "BuildStats",
    "Opened",
    "Report",
    "ReportRejected",
    "Row",
    "ServerSecret",
    "Undecodable",
    "build_pdata",
    "dependencies",
    "detect_real",
    "distinct_images",
    "open_parsed",
    "open_voucher",
    "platform_tag",
    "reconstruct",
    "verify_report",
]
