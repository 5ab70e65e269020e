"""Platform side of message franking: tag commitments, verify reports.

``tag = HMAC-SHA256(platform_key, label | commitment | sender | recipient | timestamp)`` with
every field length-prefixed (so "ab" + "c" and "a" + "bc" differ). A report is genuine when the
tag verifies for the claimed sender, recipient and time (the platform made it when it relayed the
message) and the revealed message and franking key reproduce the commitment (what was really
sent). The platform key never leaves the server.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from bastion.client.franking import COMMITMENT_BYTES, FRANKING_KEY_BYTES, verify_commitment

TAG_BYTES = 32
_LABEL = b"bastion-franking-v1"


class ReportRejected(ValueError):
    """A report that does not verify; the message says which check failed."""


def platform_tag(
    platform_key: bytes, commitment: bytes, sender: str, recipient: str, timestamp: int
) -> bytes:
    if len(commitment) != COMMITMENT_BYTES:
        raise ValueError(f"a commitment is {COMMITMENT_BYTES} bytes")
    mac = hmac.new(platform_key, _LABEL, hashlib.sha256)
    for part in (commitment, sender.encode(), recipient.encode(), str(int(timestamp)).encode()):
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.digest()


@dataclass(frozen=True)
class Report:
    message: bytes
    franking_key: bytes
    commitment: bytes
    tag: bytes
    sender: str
    recipient: str
    timestamp: int


def verify_report(platform_key: bytes, report: Report) -> None:
    """Raise :class:`ReportRejected` unless the report is genuine."""
    if len(report.franking_key) != FRANKING_KEY_BYTES:
        raise ReportRejected(f"the franking key must be {FRANKING_KEY_BYTES} bytes")
    if len(report.commitment) != COMMITMENT_BYTES or len(report.tag) != TAG_BYTES:
        raise ReportRejected("commitment and tag must be 32 bytes each")
    expected = platform_tag(
        platform_key, report.commitment, report.sender, report.recipient, report.timestamp
    )
    if not hmac.compare_digest(expected, report.tag):
        raise ReportRejected(
            "the platform tag does not verify for this commitment, sender, recipient and time"
        )
    if not verify_commitment(report.franking_key, report.message, report.commitment):
        raise ReportRejected("the message and franking key do not match the commitment")
