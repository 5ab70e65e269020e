"""Banks: named hash lists with provenance, and the file formats they are imported from."""

from bastion.banks.formats import (
    BankFormat,
    ParseError,
    detect_format,
    parse,
    write,
)
from bastion.banks.model import (
    Bank,
    BankEntry,
    IndexEntry,
    NewEntry,
    UrlMatch,
    normalize_entry,
    parse_signal_type,
    validate_bank_name,
    validate_value,
)

__all__ = [
    "Bank",
    "BankEntry",
    "BankFormat",
    "IndexEntry",
    "NewEntry",
    "ParseError",
    "UrlMatch",
    "detect_format",
    "normalize_entry",
    "parse",
    "parse_signal_type",
    "validate_bank_name",
    "validate_value",
    "write",
]
