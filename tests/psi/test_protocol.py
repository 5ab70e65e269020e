"""The voucher protocol end to end in memory: what the server can open, and when."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.client import MODE_EXACT, Account, ImageHash, hash_image
from bastion.client import group as g
from bastion.client.field import P_SHARE, lagrange_at
from bastion.client.pdata import MODE_DEFAULTS, MODES
from bastion.client.voucher import (
    VoucherError,
    open_part_a,
    open_part_b,
    outer_key,
    parse_voucher,
    voucher_bytes,
)
from bastion.psi import Row, Undecodable, detect_real, reconstruct
from bastion.psi.process import open_parsed

from .helpers import T0, random_hashes, setup

BANK = random_hashes(400, seed=100)
OUTSIDE = random_hashes(60, seed=101)


def _row(opened) -> Row:
    inner = opened.inner
    return Row(inner.x, inner.x, inner.share, inner.row)


def test_a_non_member_voucher_opens_nothing_the_server_can_compute() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=0)
    client = s.client("alice")
    for h in OUTSIDE[:10]:
        v = client.voucher_for_hash(h, "m")
        parsed = parse_voucher(v.data, s.params)
        assert open_parsed(parsed, s.secret.scalar, s.params) is None
        # Exhaustively: no ciphertext of any probe opens under the key the server can derive.
        for q, cts in parsed.probes:
            key = outer_key(parsed.header.digest, q, g.mul(s.secret.scalar, q))
            assert all(g.open_sealed(key, ct) is None for ct in cts)


@pytest.mark.parametrize("mode", ["compact", "near", "exact"])
def test_a_member_voucher_opens_a_share_of_the_account_key(mode: str) -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=0, **MODE_DEFAULTS[MODES[mode]])
    client = s.client("alice")
    opened = s.open(client.voucher_for_hash(BANK[5], "m").data)
    assert opened is not None and opened.account == "alice"
    keys = s.accounts["alice"].keys(int(T0 // s.params.epoch_seconds), 3, s.params.dhf_dim)
    assert opened.inner.share == keys.share(opened.inner.x)
    # Without t shares the parts stay sealed: the share alone is not the key.
    epoch = int(T0 // s.params.epoch_seconds)
    inner = opened.inner
    assert open_part_a(inner.share, inner.x, inner.part_a, account="alice", epoch=epoch) is None


def test_exact_mode_matches_only_identical_hashes() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=0, mode=MODE_EXACT, chunks=1, probes=1, max_flips=0)
    client = s.client("alice")
    one_bit = bytearray(bytes.fromhex(BANK[0]))
    one_bit[0] ^= 0x80
    assert s.open(client.voucher_for_hash(BANK[0], "a").data) is not None
    assert s.open(client.voucher_for_hash(bytes(one_bit), "b").data) is None


@pytest.mark.parametrize("mode", ["compact", "near"])
def test_near_matching_modes_match_the_reference_edits_of_a_bank_photo(testdata, mode: str) -> None:
    orig = hash_image((testdata / "images/bridge-mods/aaa-orig.jpg").read_bytes())
    s = setup([*BANK, orig.hex], threshold=3, synthetic_ppm=0, **MODE_DEFAULTS[MODES[mode]])
    client = s.client("alice")
    edits = sorted((testdata / "images/bridge-mods").glob("*.jpg"))
    edits += sorted((testdata / "images/misc-images/modes").iterdir())
    matched = [
        p.name for p in edits if s.open(client.voucher_for_image(p.read_bytes(), p.name).data)
    ]
    assert len(edits) == 19 and len(matched) == 19  # tests/data keeps 19 of Meta's 26
    for other in (
        "misc-images/wee.jpg",
        "reg-test-input/labelme-subset/q2821.jpg",
        "reg-test-input/exif-rotn/exif-rotn-6.jpg",
    ):
        data = (testdata / "images" / other).read_bytes()
        assert s.open(client.voucher_for_image(data, other).data) is None


def test_at_the_threshold_exactly_the_real_matched_items_open() -> None:
    t = 4
    s = setup(BANK, threshold=t, synthetic_ppm=400_000)
    alice = s.client("alice")
    rows, real_items, synthetic = [], {}, 0
    candidates = iter(enumerate(BANK))
    innocent = iter(OUTSIDE)
    while len(real_items) < t:
        for _ in range(3):  # innocent items: synthetic ones open (as cover), real ones never
            v = alice.voucher_for_hash(next(innocent), "innocent")
            opened = s.open(v.data)
            assert (opened is not None) == v.synthetic
            if opened is not None:
                rows.append(_row(opened))
                synthetic += 1
        i, h = next(candidates)
        v = alice.voucher_for_hash(h, f"bank-{i}")
        opened = s.open(v.data)
        assert opened is not None  # matched, really or synthetically
        rows.append(_row(opened))
        if v.synthetic:  # a bank item whose coin said synthetic: its real share is never sent
            synthetic += 1
            continue
        real_items[opened.inner.x] = (f"bank-{i}", h, opened.inner)
        found = detect_real(rows, t)
        if len(real_items) < t:
            assert found == []  # below the threshold: nothing, whatever the mix
    assert synthetic >= 3
    assert {r.x for r in found} == set(real_items)  # exactly the real ones, no synthetic
    key = reconstruct(found, t)
    epoch_keys = s.accounts["alice"].keys(int(T0 // s.params.epoch_seconds), t, s.params.dhf_dim)
    assert key == epoch_keys.key
    bound = {"account": "alice", "epoch": int(T0 // s.params.epoch_seconds)}
    for x, (item_id, h, inner) in real_items.items():
        assert open_part_b(key, x, inner.part_b, **bound)[0] == item_id
        assert open_part_a(key, x, inner.part_a, **bound)[0].hex() == h
        # Bound to the account and epoch they were sealed for: under the right key, another
        # account's or epoch's name opens nothing.
        assert open_part_a(key, x, inner.part_a, account="mallory", epoch=bound["epoch"]) is None
        assert open_part_b(key, x, inner.part_b, account="alice", epoch=bound["epoch"] + 1) is None


def test_the_same_item_twice_adds_no_share() -> None:
    t = 3
    s = setup(BANK, threshold=t, synthetic_ppm=0)
    alice = s.client("alice")
    first = s.open(alice.voucher_for_hash(BANK[0], "m1").data)
    again = s.open(alice.voucher_for_hash(BANK[0], "m2").data)
    other = s.open(alice.voucher_for_hash(BANK[1], "m3").data)
    assert (first.inner.x, first.inner.share) == (again.inner.x, again.inner.share)
    assert detect_real([_row(first), _row(again), _row(other)], t) == []
    third = s.open(alice.voucher_for_hash(BANK[2], "m4").data)
    assert len(detect_real([_row(first), _row(again), _row(other), _row(third)], t)) == 3


def test_another_accounts_shares_do_not_combine() -> None:
    t = 3
    s = setup(BANK, threshold=t, synthetic_ppm=0)
    vouchers = [s.client(f"user{i}").voucher_for_hash(BANK[i], "m") for i in range(4)]
    rows = [_row(s.open(v.data)) for v in vouchers]
    assert detect_real(rows, t) == []


def test_synthetic_vouchers_always_open_but_carry_no_share_and_respect_the_cap() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=500_000, dhf_dim=5)
    alice = s.client("alice")
    vouchers = [alice.voucher_for_hash(h, f"m{i}") for i, h in enumerate(OUTSIDE[:40])]
    synthetic = [v for v in vouchers if v.synthetic]
    assert len(synthetic) == 5  # capped at dhf_dim per epoch, though the coin said ~20
    for v in synthetic:
        opened = s.open(v.data)
        assert opened is not None
        keys = s.accounts["alice"].keys(int(T0 // s.params.epoch_seconds), 3, 5)
        assert opened.inner.share != keys.share(opened.inner.x)
    # Re-sending a synthetic item gives the same dummy share again; real ones stay real.
    again = alice.voucher_for_hash(OUTSIDE[vouchers.index(synthetic[0])], "again")
    assert again.synthetic
    assert s.open(again.data).inner.share == s.open(synthetic[0].data).inner.share
    assert s.accounts["alice"].synthetic[int(T0 // s.params.epoch_seconds)]
    restored = Account.from_json(s.accounts["alice"].to_json())
    assert restored.synthetic == s.accounts["alice"].synthetic


def test_every_voucher_has_the_same_size() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=500_000)
    alice = s.client("alice")
    sizes = {len(alice.voucher_for_hash(h, "m").data) for h in BANK[:5] + OUTSIDE[:10]}
    low = alice.voucher_for_hash(hash_like(BANK[0], quality=10), "low")
    sizes.add(len(low.data))
    assert sizes == {voucher_bytes(s.params, "alice")}
    assert low.probed == 0 or low.synthetic  # low-quality items are never probed


def hash_like(hexval: str, quality: int) -> ImageHash:
    return ImageHash(bytes.fromhex(hexval), np.zeros(256, np.float32), quality)


def test_low_quality_items_never_match() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=0)
    v = s.client("alice").voucher_for_hash(hash_like(BANK[0], quality=10), "flat image")
    assert v.probed == 0 and s.open(v.data) is None


def test_hostile_vouchers_fail_with_precise_errors() -> None:
    s = setup(BANK, threshold=3, synthetic_ppm=0)
    good = s.client("alice").voucher_for_hash(BANK[0], "m").data
    header_len = 3 + 32 + 4 + 1 + len("alice") + 1
    cases = {
        "bad magic": (b"XX1" + good[3:], "magic"),
        "truncated": (good[:-1], "bytes; expected"),
        "extended": (good + b"\x00", "bytes; expected"),
        "empty": (b"", "magic"),
        "probes": (good[: header_len - 1] + b"\x07" + good[header_len:], "probes"),
        "account": (good[:39] + b"\x00" + good[40:], "account"),
        "invalid point": (good[:header_len] + b"\xff" * 32 + good[header_len + 32 :], "probe 0"),
        "identity": (good[:header_len] + bytes(32) + good[header_len + 32 :], "probe 0"),
    }
    for blob, message in cases.values():
        with pytest.raises(VoucherError, match=message):
            s.open(blob)
    # A matched voucher whose inner layer was altered is not a match (and not a crash).
    tampered = bytearray(good)
    tampered[-5] ^= 1
    assert s.open(bytes(tampered)) is None
    with pytest.raises(VoucherError, match="account"):
        s.client("bad\nname")


def test_reconstruct_refuses_shares_off_the_polynomial() -> None:
    t = 3
    points = [(x, lagrange_at([(1, 5), (2, 7), (3, 11)], x, P_SHARE)) for x in (1, 2, 3, 4)]
    rows = [Row(i, x, y, ()) for i, (x, y) in enumerate(points)]
    assert reconstruct(rows, t) == lagrange_at(points[:3], 0, P_SHARE)
    bad = [*rows[:3], Row(9, 4, points[3][1] + 1, ())]
    with pytest.raises(Undecodable, match="one polynomial"):
        reconstruct(bad, t)
    with pytest.raises(Undecodable, match="needed"):
        reconstruct(rows[:2], t)
