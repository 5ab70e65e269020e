"""Actions: signed webhooks to the platform, delivered from a durable outbox.

Importing this package gives the pure parts (signing, naming rules, targets). The outbox store is
:mod:`bastion.actions.outbox`; one HTTP attempt is :mod:`bastion.actions.delivery`; the delivery
loop is :mod:`bastion.actions.worker`. Receivers verify requests with :func:`verify_signature`.
"""

from bastion.actions.model import BUILTIN_ACTIONS, Backoff, Outcome, State, classify_status
from bastion.actions.signing import (
    SIGNATURE_HEADER,
    SignatureError,
    compute_signature,
    sign,
    verify_signature,
)
from bastion.actions.targets import Target, Targets, load_targets

__all__ = [
    "BUILTIN_ACTIONS",
    "SIGNATURE_HEADER",
    "Backoff",
    "Outcome",
    "SignatureError",
    "State",
    "Target",
    "Targets",
    "classify_status",
    "compute_signature",
    "load_targets",
    "sign",
    "verify_signature",
]
