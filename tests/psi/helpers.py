"""Shared helpers for the voucher tests: seeded randomness, small banks, a client and a server."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from bastion.client import Account, Bounds, Client, Params, PData
from bastion.psi import ServerSecret, build_pdata
from bastion.psi.process import open_voucher

T0 = 1_780_000_000.0  # a fixed "now" for the client's epoch

#: Only the structural limits of :class:`Params`, for tests that need what a real client refuses
#: (t = 3, no synthetic vouchers, so that counts are exact; a small s). Never in an app.
LAB_BOUNDS = Bounds(
    threshold=(2, 1000),
    synthetic_ppm=(0, 500_000),
    dhf_dim=(1, 512),
    epoch_seconds=(3600, 366 * 86400),
    ad_bytes=(512, 1 << 20),
    min_quality=(0, 100),
    probes=(1, 64),
    probe_bits=0.0,
    bucket_size=(1, 8),
    max_slots=1 << 31,
)


def seeded(seed: int):
    """A reproducible stand-in for os.urandom."""
    return random.Random(seed).randbytes


def random_hashes(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.randbytes(32).hex() for _ in range(n)]


@dataclass
class Setup:
    params: Params
    secret: ServerSecret
    pdata: PData
    bank: list[str]
    accounts: dict[str, Account] = field(default_factory=dict)
    loaded: PData | None = None

    def client(self, account_id: str, seed: int = 0) -> Client:
        """A device that loaded the table as a client does: pinned to the published root."""
        secret = hashlib.sha256(account_id.encode()).digest()
        account = self.accounts.setdefault(account_id, Account(secret))
        if self.loaded is None:
            self.loaded = PData.from_bytes(
                self.pdata.blob, expected_root=self.pdata.root, bounds=LAB_BOUNDS
            )
        return Client(self.loaded, account_id, account, random_bytes=seeded(seed), clock=lambda: T0)

    def open(self, data: bytes):
        return open_voucher(data, self.secret.scalar, self.params)


def setup(bank: list[str], seed: int = 1, **params: int) -> Setup:
    p = Params(**params)
    secret = ServerSecret.generate(seeded(seed))
    pdata, _ = build_pdata(bank, p, secret, created=1_700_000_000)
    return Setup(p, secret, pdata, bank)


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above)."""
    import math

    if x <= 0:
        return 1.0
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    b = x + 1 - a
    c = 1e300
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_homogeneity(rows: list[list[int]]) -> float:
    """p-value of Pearson's chi-square test that the rows come from one distribution (columns
    that are empty in every row are dropped)."""
    cols = [j for j in range(len(rows[0])) if any(r[j] for r in rows)]
    table = [[r[j] for j in cols] for r in rows]
    total = sum(map(sum, table))
    row_sums = [sum(r) for r in table]
    col_sums = [sum(r[j] for r in table) for j in range(len(cols))]
    stat = 0.0
    for i, r in enumerate(table):
        for j, observed in enumerate(r):
            expected = row_sums[i] * col_sums[j] / total
            stat += (observed - expected) ** 2 / expected
    dof = (len(table) - 1) * (len(cols) - 1)
    return _gamma_q(dof / 2, stat / 2) if dof > 0 else 1.0
