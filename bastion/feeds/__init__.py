"""Bastion-to-Bastion feeds: canonical records, Ed25519 signatures and Merkle roots.

A publisher shares selected banks as a feed of signed records; subscribers verify each record
with the publisher's pinned key and check their copy against each version's signed Merkle root.
Pure: the store (``bastion.feeds.store``), the API (``bastion.api.feeds``) and the subscriber
exchange (``bastion.exchanges.bastion_feed``) build on this. See docs/feeds.md.
"""

from __future__ import annotations

from bastion.feeds.merkle import EMPTY_ROOT, leaf_hash, merkle_root, rfc6962_root
from bastion.feeds.records import (
    ADD,
    REMOVE,
    AddRecord,
    Record,
    RecordError,
    RemoveRecord,
    VersionStatement,
    add_record,
    canonical,
    parse_record,
    parse_statement,
)
from bastion.signing import (
    BadSignature,
    KeyFormatError,
    SigningKey,
    VerifyKey,
    fingerprint,
)

__all__ = [
    "ADD",
    "EMPTY_ROOT",
    "REMOVE",
    "AddRecord",
    "BadSignature",
    "KeyFormatError",
    "Record",
    "RecordError",
    "RemoveRecord",
    "SigningKey",
    "VerifyKey",
    "VersionStatement",
    "add_record",
    "canonical",
    "fingerprint",
    "leaf_hash",
    "merkle_root",
    "parse_record",
    "parse_statement",
    "rfc6962_root",
]
