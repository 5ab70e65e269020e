"""Console accounts: users, roles, passwords, sessions and login throttling (model.py, pure),
their storage (store.py), API keys (keys.py) and their tables (rows.py)."""
