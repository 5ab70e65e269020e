"""The client's own floors and ceilings on every published parameter, and its mandatory root pin.

A root only proves every client got the same table; these tests build rooted tables with each
parameter just inside and just outside the client's bounds and check that the client refuses
exactly the unsafe ones, by name, and that no client is made against an unpinned table without
the loudly named opt-out. (The same attacks over HTTP: tests/psi/test_client_bounds.py.)"""

from __future__ import annotations

import random

import pytest

from bastion.client import (
    DEFAULT_BOUNDS,
    Account,
    Bounds,
    Client,
    InsecureTableWarning,
    Params,
    PData,
    PDataError,
    RootPinError,
    UnsafeParamsError,
    pdata_root,
)
from bastion.client import group as g
from bastion.client.pdata import MODE_COMPACT, MODE_EXACT, MODE_NEAR, MODES, serialize

DAY = 86400
NEAR = {"mode": MODE_NEAR, "chunks": 5, "probes": 8, "max_flips": 2, "weak_bits": 8}
EXACT = {"mode": MODE_EXACT, "chunks": 1, "probes": 1, "max_flips": 0, "weak_bits": 0}


def _table(n_buckets: int = 8, seed: int = 1, **params: int) -> bytes:
    """A well-formed table with these parameters (random points: matching is not the point)."""
    p = Params(**params)
    rng = random.Random(seed)
    slots = b"".join(g.random_point(rng.randbytes) for _ in range(n_buckets * p.bucket_size))
    return serialize(
        p,
        n_buckets=n_buckets,
        seed=rng.randbytes(16),
        public=g.random_point(rng.randbytes),
        created=1_700_000_000,
        label="bounds",
        slots=slots,
    )


def _load(blob: bytes, **kwargs: object) -> PData:
    return PData.from_bytes(blob, expected_root=pdata_root(blob), **kwargs)  # type: ignore[arg-type]


# (parameter that must be named, overrides): each just outside a floor or a ceiling.
OUTSIDE = {
    "threshold-floor": ("threshold", {"threshold": 4}),
    "threshold-2": ("threshold", {"threshold": 2}),
    "threshold-ceiling": ("threshold", {"threshold": 101}),
    "synthetic-floor": ("synthetic_ppm", {"synthetic_ppm": 9_999}),
    "synthetic-0": ("synthetic_ppm", {"synthetic_ppm": 0}),
    "dhf_dim-floor": ("dhf_dim", {"dhf_dim": 15}),
    "dhf_dim-ceiling": ("dhf_dim", {"dhf_dim": 257}),
    "epoch-floor": ("epoch_seconds", {"epoch_seconds": DAY - 1}),
    "epoch-ceiling": ("epoch_seconds", {"epoch_seconds": 90 * DAY + 1}),
    "epoch-year": ("epoch_seconds", {"epoch_seconds": 365 * DAY}),
    "derivative-floor": ("ad_bytes", {"ad_bytes": 1023}),
    "derivative-ceiling": ("ad_bytes", {"ad_bytes": 16 * 1024 + 1}),
    "derivative-1MiB": ("ad_bytes", {"ad_bytes": 1 << 20}),
    "min_quality-floor": ("min_quality", {"min_quality": 49}),
    "probes-ceiling": ("probes", {"probes": 17, "key_bits": 64, "weak_bits": 16}),
    "compact-key-bits": ("probe_bits", {"key_bits": 47, "probes": 1, "max_flips": 0}),
    "compact-12-probes-of-51-bits": ("probe_bits", {"key_bits": 51}),
    "near-6-chunks": ("probe_bits", {**NEAR, "chunks": 6}),
    "near-9-probes": ("probe_bits", {**NEAR, "probes": 9}),
    "bucket_size-ceiling": ("bucket_size", {"bucket_size": 5}),
}
# Just inside each bound: accepted.
INSIDE = {
    "threshold-floor": {"threshold": 5},
    "threshold-ceiling": {"threshold": 100},
    "synthetic-floor": {"synthetic_ppm": 10_000},
    "synthetic-ceiling": {"synthetic_ppm": 500_000},
    "dhf_dim-floor": {"dhf_dim": 16},
    "dhf_dim-ceiling": {"dhf_dim": 256},
    "epoch-floor": {"epoch_seconds": DAY},
    "epoch-ceiling": {"epoch_seconds": 90 * DAY},
    "derivative-floor": {"ad_bytes": 1024},
    "derivative-ceiling": {"ad_bytes": 16 * 1024},
    "min_quality-floor": {"min_quality": 50},
    "min_quality-ceiling": {"min_quality": 100},
    "probes-ceiling": {"probes": 16, "key_bits": 64, "weak_bits": 16},
    "compact-48-bits": {"key_bits": 48, "probes": 1, "max_flips": 0},
    "compact-16-probes-of-52-bits": {"probes": 16, "weak_bits": 16},
    "near-default": NEAR,
    "exact-default": EXACT,
    "bucket_size-ceiling": {"bucket_size": 4},
    "bucket_size-floor": {"bucket_size": 1},
}


@pytest.mark.parametrize(("name", "overrides"), OUTSIDE.values(), ids=OUTSIDE.keys())
def test_a_rooted_table_outside_a_bound_is_refused_naming_it(
    name: str, overrides: dict[str, int]
) -> None:
    blob = _table(**overrides)
    with pytest.raises(UnsafeParamsError) as refused:
        _load(blob)  # the root matches: the pin alone would let it through
    assert [v.split()[0] for v in refused.value.violations] == [name]
    assert isinstance(refused.value, PDataError)  # callers catching PDataError still catch it
    # Not even the insecure opt-out or the server's own parse gets such a table into a client.
    with pytest.warns(InsecureTableWarning), pytest.raises(UnsafeParamsError):
        PData.from_bytes(blob, expected_root=None, insecure_skip_root_pin=True)
    unchecked = PData.parse_unchecked(blob)
    with pytest.warns(InsecureTableWarning), pytest.raises(UnsafeParamsError, match=name):
        Client(unchecked, "someone", Account.new(), insecure_skip_root_pin=True)


@pytest.mark.parametrize("overrides", INSIDE.values(), ids=INSIDE.keys())
def test_a_table_just_inside_every_bound_is_accepted(overrides: dict[str, int]) -> None:
    pdata = _load(_table(**overrides))
    client = Client(pdata, "someone", Account.new())
    assert len(client.voucher_for_hash(bytes(32), "item").data) > 1000


def test_the_servers_defaults_in_every_mode_are_inside_the_bounds() -> None:
    for mode in MODES:
        assert DEFAULT_BOUNDS.violations(Params.for_mode(mode)) == [], mode
    assert Params().mode == MODE_COMPACT and DEFAULT_BOUNDS.violations(Params()) == []


def test_a_malicious_servers_table_lists_every_violation() -> None:
    blob = _table(threshold=2, synthetic_ppm=0, ad_bytes=1 << 20, epoch_seconds=365 * DAY)
    with pytest.raises(UnsafeParamsError) as refused:
        _load(blob)
    names = [v.split()[0] for v in refused.value.violations]
    assert names == ["threshold", "synthetic_ppm", "epoch_seconds", "ad_bytes"]
    assert "365 days; allowed 1-90 days" in str(refused.value)


def test_the_table_size_has_a_ceiling() -> None:
    blob = _table(n_buckets=9)  # 18 slots
    assert _load(blob, bounds=Bounds(max_slots=18)).n_slots == 18
    with pytest.raises(UnsafeParamsError, match="max_slots: the table has 18 slots"):
        _load(blob, bounds=Bounds(max_slots=17))


def test_an_unpinned_client_cannot_be_made_without_the_opt_out() -> None:
    blob = _table()
    with pytest.raises(TypeError, match="expected_root"):
        PData.from_bytes(blob)  # type: ignore[call-arg]
    for missing in (None, "", "not a root", "ab" * 31, b"short"):
        with pytest.raises(RootPinError):
            PData.from_bytes(blob, expected_root=missing)
    unchecked = PData.parse_unchecked(blob)  # what the server that built it sees
    with pytest.raises(RootPinError, match="not loaded against a pinned root"):
        Client(unchecked, "someone", Account.new())
    # The opt-out exists, is explicit, and is loud.
    with pytest.warns(InsecureTableWarning, match="insecure_skip_root_pin"):
        skipped = PData.from_bytes(blob, expected_root=None, insecure_skip_root_pin=True)
    assert len(Client(skipped, "someone", Account.new()).voucher_for_hash(bytes(32), "i").data)
    with pytest.warns(InsecureTableWarning):
        Client(unchecked, "someone", Account.new(), insecure_skip_root_pin=True)
    # With the pin (hex in either case, or raw bytes), no warning and no opt-out.
    for pin in (pdata_root(blob), pdata_root(blob).upper(), bytes.fromhex(pdata_root(blob))):
        assert PData.from_bytes(blob, expected_root=pin).root_pin == "verified"


def test_a_wrong_root_is_refused_even_with_safe_parameters() -> None:
    pinned = _table(seed=1)
    other = _table(seed=2)  # same parameters, another table (say, one made for one user)
    with pytest.raises(RootPinError, match="does not match the expected root"):
        PData.from_bytes(other, expected_root=pdata_root(pinned))
    flipped = bytearray(pinned)
    flipped[-1] ^= 1  # one slot byte
    with pytest.raises(RootPinError):
        PData.from_bytes(bytes(flipped), expected_root=pdata_root(pinned))
    # The pin is checked even when the insecure flag is also passed.
    with pytest.raises(RootPinError):
        PData.from_bytes(other, expected_root=pdata_root(pinned), insecure_skip_root_pin=True)
