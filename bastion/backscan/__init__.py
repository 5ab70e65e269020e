"""Back-scans: hash and match an archive (a folder, a manifest or an object-store prefix) into a
resumable Parquet dataset, hand its matches to review at an operator-set rate, and re-match the
stored signals when banks grow (docs/backscan.md)."""
