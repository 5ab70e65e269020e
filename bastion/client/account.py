"""An account's secret and the per-epoch keys derived from it.

Per epoch (``floor(time / epoch_seconds)``, published in pdata) everything is derived from the
32-byte account secret, so a platform only has to keep that secret (and the small synthetic-voucher
state) per user:

* ``K``, the account key, and a random polynomial ``f`` of degree t-1 over GF(2^255-19) with
  ``f(0) = K``: every real voucher carries the share ``(x, f(x))``;
* ``x = PRF(x_key, item hash)``: the same item always gives the same share, so sending it twice
  adds nothing towards the threshold;
* a (t-1) x s matrix ``C`` over GF(2^127-1): a real voucher carries ``(1, x, ..., x^(t-2)) · C``,
  the row the server uses to find the real shares among synthetic ones once there are t of them
  (``bastion.psi.threshold``);
* the synthetic-voucher coin and the dummy values a synthetic voucher carries.

The state (``synthetic``) records which items were sent as synthetic in which epoch, so that a
re-sent item is synthetic again (with the same dummy share) and so that no epoch ever has more
than ``dhf_dim`` synthetic vouchers, the most the server's detection can absorb. A platform must
persist it with the secret (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from bastion.client.field import (
    P_DHF,
    P_SHARE,
    X_BYTES,
    poly_eval,
    powers,
    reduce_wide,
    to_bytes,
)
from bastion.client.group import RandomBytes, prf

SECRET_BYTES = 32


def _u(value: int, size: int = 8) -> bytes:
    return value.to_bytes(size, "big")


class EpochKeys:
    """The keys of one account for one epoch and one (threshold, dhf_dim) pair."""

    def __init__(self, secret: bytes, epoch: int, threshold: int, dhf_dim: int) -> None:
        base = prf(secret, b"epoch", _u(epoch), _u(threshold, 2), _u(dhf_dim, 2))
        self.epoch = epoch
        self.threshold = threshold
        self.dhf_dim = dhf_dim
        self.coefficients = [self._share_element(base, b"coef", i) for i in range(threshold)]
        if self.coefficients[0] == 0:  # pragma: no cover - probability 2^-255
            self.coefficients[0] = 1
        self.matrix = [
            [reduce_wide(prf(base, b"dhf", _u(i), _u(j)), P_DHF) for j in range(dhf_dim)]
            for i in range(threshold - 1)
        ]
        self.x_key = prf(base, b"x-key")
        self.coin_key = prf(base, b"coin-key")
        self.dummy_key = prf(base, b"dummy-key")

    @staticmethod
    def _share_element(base: bytes, label: bytes, i: int) -> int:
        wide = prf(base, label, _u(i), b"0") + prf(base, label, _u(i), b"1")
        return reduce_wide(wide, P_SHARE)

    @property
    def key(self) -> int:
        """K = f(0), the account key the shares reconstruct."""
        return self.coefficients[0]

    def x_for(self, item: bytes) -> int:
        """The share x-coordinate of an item (its PDQ hash): non-zero, below 2^127."""
        x = int.from_bytes(prf(self.x_key, b"x", item)[:X_BYTES], "big") % P_DHF
        return x or 1

    def share(self, x: int) -> int:
        return poly_eval(self.coefficients, x, P_SHARE)

    def dhf_row(self, x: int) -> list[int]:
        v = powers(x, self.threshold - 1, P_DHF)
        return [
            sum(v[i] * self.matrix[i][j] for i in range(self.threshold - 1)) % P_DHF
            for j in range(self.dhf_dim)
        ]

    def coin(self, item: bytes, ppm: int) -> bool:
        """Deterministic per item: the same item is always the same side of the coin."""
        draw = int.from_bytes(prf(self.coin_key, b"coin", item)[:8], "big")
        return draw < ppm * (2**64) // 1_000_000

    def dummy(self, x: int) -> tuple[int, list[int]]:
        """A synthetic voucher's share value and row: uniform, and the same on every re-send."""
        wide = prf(self.dummy_key, b"share", to_bytes(x, X_BYTES))
        wide += prf(self.dummy_key, b"share+", to_bytes(x, X_BYTES))
        share = reduce_wide(wide, P_SHARE)
        row = [
            reduce_wide(prf(self.dummy_key, b"row", to_bytes(x, X_BYTES), _u(j)), P_DHF)
            for j in range(self.dhf_dim)
        ]
        return share, row


@dataclass
class Account:
    """The secret and synthetic-voucher state of one account; keep both on the user's behalf."""

    secret: bytes
    synthetic: dict[int, list[str]] = field(default_factory=dict)
    _keys: dict[tuple[int, int, int], EpochKeys] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise ValueError(f"an account secret is {SECRET_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Account(epochs={sorted(self.synthetic)})"

    @classmethod
    def new(cls, random_bytes: RandomBytes = os.urandom) -> Account:
        return cls(random_bytes(SECRET_BYTES))

    def keys(self, epoch: int, threshold: int, dhf_dim: int) -> EpochKeys:
        k = (epoch, threshold, dhf_dim)
        if k not in self._keys:
            if len(self._keys) > 8:
                self._keys.clear()
            self._keys[k] = EpochKeys(self.secret, epoch, threshold, dhf_dim)
        return self._keys[k]

    def to_json(self) -> str:
        return json.dumps(
            {
                "secret": self.secret.hex(),
                "synthetic": {str(k): v for k, v in self.synthetic.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Account:
        doc = json.loads(text)
        synthetic = {int(k): [str(x) for x in v] for k, v in doc.get("synthetic", {}).items()}
        return cls(bytes.fromhex(doc["secret"]), synthetic)

    def forget_before(self, epoch: int) -> None:
        """Drop synthetic state of epochs before ``epoch`` (it is never needed again)."""
        for old in [e for e in self.synthetic if e < epoch]:
            del self.synthetic[old]
