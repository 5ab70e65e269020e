"""Indexes answering "which bank entries are within distance d of this signal"."""

from bastion.index.exact import ExactIndex
from bastion.index.pdq import PDQIndex, hex_to_bytes

__all__ = ["ExactIndex", "PDQIndex", "hex_to_bytes"]
