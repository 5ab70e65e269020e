"""Exchanges: connectors that keep a bank in sync with an outside hash list and send findings
back. See :mod:`bastion.exchanges.base` for the interface; each built-in connector registers
itself when imported here."""

from __future__ import annotations

from bastion.exchanges.base import (
    Attestation,
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeContext,
    ExchangeCredentials,
    ExchangeError,
    FeedbackItem,
    FeedbackUnsupported,
    OnDelete,
    Page,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
    Verdict,
    exchange_type,
    exchange_types,
    register,
)

# -- built-in connectors (each module registers its class) --
# isort: off
from bastion.exchanges import stopncii  # noqa: F401
from bastion.exchanges import threatexchange  # noqa: F401
from bastion.exchanges import bastion_feed  # noqa: F401
from bastion.exchanges import lists  # noqa: F401
from bastion.exchanges import ncmec  # noqa: F401
# isort: on
# -- end built-in connectors --

__all__ = [
    "Attestation",
    "Checkpoint",
    "Exchange",
    "ExchangeConfig",
    "ExchangeContext",
    "ExchangeCredentials",
    "ExchangeError",
    "FeedbackItem",
    "FeedbackUnsupported",
    "OnDelete",
    "Page",
    "PermanentError",
    "Poisoned",
    "PoisonedPage",
    "Removal",
    "TransientError",
    "Upsert",
    "Verdict",
    "exchange_type",
    "exchange_types",
    "register",
]
