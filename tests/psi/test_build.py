"""pdata: every bank key is placed and findable, nothing of the bank shows without the secret,
the root pins the exact table, and the near-match keys keep one hit per voucher."""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import pytest

from bastion.client import MODE_EXACT, Params, PData, PDataError
from bastion.client import group as g
from bastion.client.locality import bank_keys, chunk_bounds, compact_positions, probe_keys
from bastion.client.pdata import serialize
from bastion.psi import ServerSecret, build_pdata
from bastion.psi.build import BuildError, buckets_for, place, table_keys

from .helpers import chi2_homogeneity, random_hashes, seeded

EXACT = Params(mode=MODE_EXACT, chunks=1, probes=1, max_flips=0)
NEAR = Params.for_mode("near")
COMPACT = Params()


def _owner(pdata: PData, secret: ServerSecret, key: bytes) -> int | None:
    blinded = secret.blind(key)
    hits = [w for w in pdata.slots_for(key) if pdata.slot(w) == blinded]
    assert len(hits) <= 1
    return hits[0] if hits else None


@pytest.mark.parametrize("params", [EXACT, NEAR, COMPACT], ids=["exact", "near", "compact"])
@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_every_key_sits_in_one_of_its_candidate_slots(params: Params) -> None:
    bank = random_hashes(3000, seed=7)
    secret = ServerSecret.generate(seeded(1))
    pdata, st = build_pdata(bank, params, secret)
    keys = [k for h in bank for k in bank_keys(bytes.fromhex(h), params)]
    slots = {_owner(pdata, secret, k) for k in keys}
    assert None not in slots  # no stash: every key is findable by a client
    assert len(slots) == len(keys) == st.keys  # distinct random hashes: distinct slots
    assert 0.8 <= st.load <= 0.86 and st.attempts == 1
    # A key not in the bank is in none of its slots.
    for h in random_hashes(200, seed=8):
        assert all(_owner(pdata, secret, k) is None for k in bank_keys(bytes.fromhex(h), params))


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_bytes_per_entry_under_64_in_compact_and_exact_mode_and_near_is_per_chunk() -> None:
    bank = random_hashes(5000, seed=3)
    secret = ServerSecret.generate(seeded(2))
    tables = {
        name: build_pdata(bank, params, secret)
        for name, params in [("exact", EXACT), ("near", NEAR), ("compact", COMPACT)]
    }
    per_entry = {}
    for name, (pdata, st) in tables.items():
        # Structural: the table is its slots (32-byte points) plus a small header.
        assert st.blob_bytes == len(pdata.blob) < pdata.n_slots * 32 + 512
        per_entry[name] = pdata.n_slots * 32 / st.entries
        assert st.bytes_per_entry == pytest.approx(per_entry[name], rel=0.01)
    assert COMPACT.mode == Params().mode  # the default mode is the compact one
    assert tables["compact"][1].keys <= len(bank)  # one key per entry, never more
    assert per_entry["compact"] < 64 / 1.6 and per_entry["exact"] < 64 / 1.6  # ~38 B each
    assert per_entry["near"] == pytest.approx(NEAR.chunks * per_entry["exact"], rel=0.02)


def test_compact_projection_is_the_lowest_frequencies_and_probes_stay_around_it() -> None:
    positions = compact_positions(COMPACT.key_bits)
    assert len(positions) == len(set(positions)) == COMPACT.key_bits
    assert set(positions) < set(compact_positions(64))  # nested: widths choose a prefix
    # pdqhash lists coefficients high frequency first: bit 255 is DCT (0, 0) and is always in.
    assert 255 in positions and 0 not in positions
    rng = np.random.default_rng(4)
    for _ in range(30):
        raw = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
        floats = rng.normal(size=256).astype(np.float32)
        keys = probe_keys(raw, floats, COMPACT)
        assert len(keys) == COMPACT.probes == len(set(keys))
        assert keys[0] == bank_keys(raw, COMPACT)[0]  # the unedited item hits at once
        base = np.unpackbits(np.frombuffer(bank_keys(raw, COMPACT)[0][1:], np.uint8))
        margins = np.abs(floats - np.median(floats))[positions]
        weakest = set(np.argsort(margins, kind="stable")[: COMPACT.weak_bits].tolist())
        for key in keys:
            probe = np.unpackbits(np.frombuffer(key[1:], np.uint8))
            flipped = set(np.flatnonzero(probe[: len(positions)] != base[: len(positions)]))
            assert len(flipped) <= COMPACT.max_flips and flipped <= weakest


def test_placement_that_cannot_succeed_reports_none() -> None:
    keys = [bytes([i]) for i in range(20)]
    assert place(keys, n_buckets=4, bucket_size=2, seed=b"s" * 16) is None  # 20 keys, 8 slots
    table = place(keys, n_buckets=buckets_for(20, 2, 0.5), bucket_size=2, seed=b"s" * 16)
    assert table is not None and sorted(i for i in table if i >= 0) == list(range(20))


def test_overfull_load_grows_the_table_rather_than_dropping_keys() -> None:
    bank = random_hashes(2000, seed=11)
    secret = ServerSecret.generate(seeded(3))
    pdata, st = build_pdata(bank, EXACT, secret, load=0.95)  # above the 2x2 threshold (~0.89)
    assert st.attempts > 1 and st.load < 0.95
    assert all(
        _owner(pdata, secret, k) is not None
        for k in table_keys(
            np.frombuffer(b"".join(bytes.fromhex(h) for h in bank), np.uint8).reshape(-1, 32),
            EXACT,
        )[0]
    )


def test_same_inputs_same_root_and_any_change_changes_it() -> None:
    bank = random_hashes(500, seed=5)
    secret = ServerSecret.generate(seeded(4))
    a, _ = build_pdata(bank, NEAR, secret, created=1, label="x")
    b, _ = build_pdata(bank, NEAR, secret, created=1, label="x")
    assert a.root == b.root and a.blob == b.blob  # an auditor with the secret can reproduce it
    changed = bank.copy()
    flipped = bytearray(bytes.fromhex(changed[123]))
    flipped[31] ^= 1  # one bit of one entry
    changed[123] = flipped.hex()
    roots = {
        a.root,
        build_pdata(changed, NEAR, secret, created=1, label="x")[0].root,
        build_pdata(bank[:-1], NEAR, secret, created=1, label="x")[0].root,  # one removed
        build_pdata([*bank, random_hashes(1, 9)[0]], NEAR, secret, created=1, label="x")[0].root,
        build_pdata(bank, Params(threshold=11), secret, created=1, label="x")[0].root,
        build_pdata(bank, NEAR, ServerSecret.generate(seeded(5)), created=1, label="x")[0].root,
    }
    assert len(roots) == 6


def test_client_refuses_a_table_that_is_not_the_published_one() -> None:
    secret = ServerSecret.generate(seeded(6))
    pdata, _ = build_pdata(random_hashes(100, seed=1), NEAR, secret)
    assert PData.from_bytes(pdata.blob, expected_root=pdata.root).root == pdata.root
    for pos in (10, 60, len(pdata.blob) // 2, len(pdata.blob) - 1):  # header, L, slots
        tampered = bytearray(pdata.blob)
        tampered[pos] ^= 0x40
        with pytest.raises(PDataError):
            PData.from_bytes(bytes(tampered), expected_root=pdata.root)
    with pytest.raises(PDataError, match="header says"):
        PData.from_bytes(pdata.blob[:-32], expected_root=pdata.root)
    with pytest.raises(PDataError, match="magic"):
        PData.from_bytes(b"XXXX" + pdata.blob[4:], expected_root=pdata.root)
    with pytest.raises(PDataError, match="shorter than its header"):
        PData.from_bytes(b"BPD1", expected_root=pdata.root)


def test_unsafe_parameters_are_refused() -> None:
    with pytest.raises(PDataError, match="threshold"):
        Params(threshold=1)
    with pytest.raises(PDataError, match="synthetic_ppm"):
        Params(synthetic_ppm=900_000)
    with pytest.raises(PDataError, match="exact mode"):
        Params(mode=MODE_EXACT)
    secret = ServerSecret.generate(seeded(7))
    with pytest.raises(PDataError, match="L is not a valid"):
        PData.from_bytes(
            serialize(
                EXACT,
                n_buckets=8,
                seed=bytes(16),
                public=b"\xff" * 32,
                created=0,
                label="",
                slots=bytes(8 * 2 * 32),
            ),
            expected_root="00" * 32,
        )
    with pytest.raises(BuildError, match="entry 1"):
        build_pdata(["00" * 32, "zz"], EXACT, secret)


def test_pdata_reveals_no_bank_entry_without_the_secret() -> None:
    bank = random_hashes(2000, seed=21)
    secret = ServerSecret.generate(seeded(8))
    pdata, _ = build_pdata(bank, EXACT, secret)
    blob = pdata.blob
    slots = {pdata.slot(i) for i in range(pdata.n_slots)}
    # Neither the hashes nor their unblinded points appear anywhere in the table.
    for h in bank[:300]:
        raw = bytes.fromhex(h)
        assert raw[:12] not in blob
        assert g.hash_to_group(b"E" + raw) not in slots
    # A client guessing the scalar learns nothing: another scalar finds no entry.
    guess = ServerSecret.generate(seeded(99))
    assert not any(guess.blind(b"E" + bytes.fromhex(h)) in slots for h in bank[:300])
    # Slots holding entries and filler slots look alike, byte for byte.
    keys = [b"E" + bytes.fromhex(h) for h in bank]
    real = {_owner(pdata, secret, k) for k in keys}
    filled = [pdata.slot(i) for i in sorted(real)]
    filler = [pdata.slot(i) for i in range(pdata.n_slots) if i not in real]
    assert all(g.is_valid_point(p) for p in filler[:200] + filled[:200])

    def histogram(points: list[bytes]) -> list[int]:
        counts = collections.Counter(b >> 4 for p in points for b in p[:31])
        return [counts[i] for i in range(16)]

    assert chi2_homogeneity([histogram(filled), histogram(filler)]) > 0.001


def test_near_keys_of_one_chunk_are_far_apart_so_a_voucher_hits_at_most_once() -> None:
    base = random_hashes(300, seed=31)
    rng = np.random.default_rng(0)
    near_dups = []
    for h in base[:100]:  # variants 1-4 bits away, as hash lists often hold
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8))
        for n in (1, 2, 4):
            flipped = bits.copy()
            flipped[rng.choice(52, n, replace=False)] ^= 1  # inside chunk 0
            near_dups.append(np.packbits(flipped).tobytes().hex())
    hashes = np.frombuffer(b"".join(bytes.fromhex(h) for h in base + near_dups), np.uint8).reshape(
        -1, 32
    )
    keys, dropped = table_keys(hashes, NEAR)
    assert dropped >= 300  # every variant within 4 bits of its base lost its chunk-0 key
    lo, hi = chunk_bounds(NEAR.chunks)[0]
    chunk0 = [k for k in keys if k[1] == 0]
    values = [int.from_bytes(k[2:], "big") >> (8 * len(k[2:]) - (hi - lo)) for k in chunk0]
    gaps = [bin(a ^ b).count("1") for i, a in enumerate(values) for b in values[i + 1 :]]
    assert min(gaps) > 2 * NEAR.max_flips
    # The first of each cluster (in bank order) kept its key.
    kept = set(chunk0)
    for h in base:
        assert bank_keys(bytes.fromhex(h), NEAR)[0] in kept


def test_secret_round_trip_and_repr_hides_it() -> None:
    secret = ServerSecret.generate(seeded(12))
    assert ServerSecret.from_bytes(secret.to_bytes()) == secret
    assert secret.scalar.hex() not in repr(secret)
    with pytest.raises(ValueError, match="reduced"):
        ServerSecret.from_bytes(b"\xff" * 64)
    assert hashlib.sha256(secret.public).digest() != hashlib.sha256(secret.scalar).digest()


def test_compact_keys_are_far_apart_so_a_voucher_hits_at_most_once() -> None:
    base = random_hashes(300, seed=32)
    positions = compact_positions(COMPACT.key_bits)
    rng = np.random.default_rng(1)
    near_dups = []
    for h in base[:100]:  # variants 1-6 bits away inside the projection
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8))
        for n in (1, 3, 6):
            flipped = bits.copy()
            flipped[rng.choice(positions, n, replace=False)] ^= 1
            near_dups.append(np.packbits(flipped).tobytes().hex())
    hashes = np.frombuffer(b"".join(bytes.fromhex(h) for h in base + near_dups), np.uint8).reshape(
        -1, 32
    )
    keys, dropped = table_keys(hashes, COMPACT)
    assert dropped >= 300 and len(keys) <= 300  # one key per entry; close variants dropped
    values = [int.from_bytes(k[1:], "big") >> (8 * len(k[1:]) - COMPACT.key_bits) for k in keys]
    gaps = [bin(a ^ b).count("1") for i, a in enumerate(values) for b in values[i + 1 :]]
    assert min(gaps) > 2 * COMPACT.max_flips  # every two probes differ by <= 2 * max_flips
    kept = set(keys)
    for h in base:  # the first of each cluster (in bank order) kept its key
        assert bank_keys(bytes.fromhex(h), COMPACT)[0] in kept
