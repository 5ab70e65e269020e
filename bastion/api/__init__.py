"""HTTP API: Bastion API v1 under /v1 and the HMA-compatible surface (/h, /m, /c)."""
