"""The server's secret for one pdata table: the blinding scalar ``a`` and the filler seed.

``a`` never leaves the server (the store keeps it sealed under the master key); ``L = a·G`` is
published in pdata. The filler seed makes empty slots reproducible, so an auditor given the
secret, the parameters and the bank list can rebuild the table and check its root bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bastion.client import group as g

SECRET_BYTES = 64


@dataclass(frozen=True)
class ServerSecret:
    scalar: bytes
    fill_seed: bytes

    def __repr__(self) -> str:  # never print key material
        return "ServerSecret(...)"

    @classmethod
    def generate(cls, random_bytes: g.RandomBytes = os.urandom) -> ServerSecret:
        return cls(g.random_scalar(random_bytes), random_bytes(32))

    @classmethod
    def from_bytes(cls, raw: bytes) -> ServerSecret:
        if len(raw) != SECRET_BYTES:
            raise ValueError(f"a server secret is {SECRET_BYTES} bytes")
        scalar = raw[:32]
        if g.scalar_from_bytes(scalar + bytes(32)) != scalar or not any(scalar):
            raise ValueError("server scalar is not a reduced non-zero scalar")
        return cls(scalar, raw[32:])

    def to_bytes(self) -> bytes:
        return self.scalar + self.fill_seed

    @property
    def public(self) -> bytes:
        """L = a·G."""
        return g.mul_base(self.scalar)

    def blind(self, key: bytes) -> bytes:
        """a·H(key): what the slot holding ``key`` contains."""
        return g.mul(self.scalar, g.hash_to_group(key))
