"""Identity signals: account identifiers normalised and shared only as keyed hashes."""
