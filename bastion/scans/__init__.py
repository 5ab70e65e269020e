"""Scans: the record of each content check, who asked and what it matched (``scans`` table)."""
