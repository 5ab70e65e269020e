"""Exchanges: connectors that keep a bank in sync with an outside hash list and send findings
back. See :mod:`bastion.exchanges.base` for the interface; each built-in connector registers
itself when imported here. The store, its tables and the sync engine
(``store``, ``rows``, ``engine``) are not imported here: they need the database core."""

from __future__ import annotations

# The built-in connectors: importing each registers its class (bastion.exchanges.base.register).
from bastion.exchanges import bastion_feed, lists, ncmec, stopncii, threatexchange  # noqa: F401
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
