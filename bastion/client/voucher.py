"""Safety vouchers: what a client sends beside each encrypted message, and their wire format.

Wire format, version 2 (big-endian)::

    header:  "BV2" | pdata root (32) | epoch u32 | account length u8 | account (UTF-8)
             | probes u8
    probes:  probes * ( Q (32) | 2*bucket_size * outer ciphertext (32-byte rkey + 16 tag) )
    inner:   ChaCha20-Poly1305(rkey, zero nonce, aad = header) of
             x (16) | share (32) | dhf row (16 * dhf_dim) | part A (62) | part B (ad_bytes + 28)
    part A, part B: nonce (12) | ChaCha20-Poly1305(part key, nonce,
             aad = "BVP2" | account length u8 | account | epoch u32 | x (16)) of their plaintext

The account is bound into everything sealed: the outer keys hash the header, the inner layer
takes the header as associated data, and parts A and B take the account and epoch as associated
data. A voucher relabelled with another account opens nothing, and the server also refuses a
voucher whose header names another account than the platform says sent it (docs/e2ee.md).
Version 1 (parts bound to x alone) is no longer accepted.

Every voucher made against one pdata has the same size, matching or not, real or synthetic.

A probe tests one key y (see ``locality``): with fresh random scalars b, c the client sends
``Q = b·H(y) + c·G`` and, for each of y's candidate slots w, ``AEAD(KDF(b·P_w + c·L), rkey)``.
The server computes ``a·Q``: if slot w holds ``a·H(y)`` then ``b·P_w + c·L = a·Q`` and that one
ciphertext opens; otherwise ``b·P_w + c·L - a·Q = b·a·(H(x_w) - H(y))`` is hidden by b and
nothing opens. One (b, c) serves the slots of a probe (randomness reuse across recipients, as in
multi-recipient ElGamal; see docs/e2ee.md), so the server does one scalar multiplication per
probe, not per slot. Ciphertexts within a probe and probes within a voucher are shuffled.

Parts A and B of the inner payload are sealed under keys derived from the account key K, which
the server can compute once t real shares reached it (t items whose projection hit a table key;
that is the cryptographic gate): part A holds the item's PDQ hash and quality, part B the item
id and the low-resolution derivative. Checking each hash against the bank before opening part B,
and destroying part B of items that fail, is the server's policy, not cryptography.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bastion.client import group as g
from bastion.client.account import Account, EpochKeys
from bastion.client.field import (
    DHF_BYTES,
    P_DHF,
    P_SHARE,
    SHARE_BYTES,
    X_BYTES,
    from_bytes,
    to_bytes,
)
from bastion.client.image import ImageHash, hash_and_derivative
from bastion.client.locality import probe_keys
from bastion.client.pdata import (
    DEFAULT_BOUNDS,
    PIN_NONE,
    InsecureTableWarning,
    Params,
    PData,
    RootPinError,
)

MAGIC = b"BV2"
MAX_ACCOUNT = 128
OUTER_CT = g.KEY_BYTES + g.TAG_BYTES
PART_A_PLAIN = 1 + 32 + 1
PART_A = g.NONCE_BYTES + PART_A_PLAIN + g.TAG_BYTES
_PART_B_HEAD = struct.Struct(">HBI")  # item id length, media type length, media length
MAX_ITEM_ID = 512
_FMT_VERSION = 2
_PART_AAD = b"BVP2"


class VoucherError(ValueError):
    """A malformed voucher or an argument a voucher cannot be made from; says what is wrong."""


def part_b_bytes(params: Params) -> int:
    return g.NONCE_BYTES + params.ad_bytes + g.TAG_BYTES


def inner_plain_bytes(params: Params) -> int:
    return X_BYTES + SHARE_BYTES + DHF_BYTES * params.dhf_dim + PART_A + part_b_bytes(params)


def probe_bytes(params: Params) -> int:
    return g.POINT_BYTES + params.slots_per_key * OUTER_CT


def voucher_bytes(params: Params, account: str) -> int:
    """The exact size of every voucher for ``account`` under these parameters."""
    header = len(MAGIC) + 32 + 4 + 1 + len(account.encode("utf-8")) + 1
    return header + params.probes * probe_bytes(params) + inner_plain_bytes(params) + g.TAG_BYTES


def check_account(account: object) -> str:
    if not isinstance(account, str):
        raise VoucherError("account must be a string")
    raw = account.encode("utf-8", "surrogatepass")
    if not 1 <= len(raw) <= MAX_ACCOUNT or any(c < 0x20 or c == 0x7F for c in raw):
        raise VoucherError(
            f"account must be 1-{MAX_ACCOUNT} bytes of UTF-8 without control characters"
        )
    try:
        account.encode("utf-8")
    except UnicodeEncodeError:
        raise VoucherError("account is not valid Unicode") from None
    return account


def encode_header(root: bytes, epoch: int, account: str, probes: int) -> bytes:
    raw = check_account(account).encode("utf-8")
    return MAGIC + root + struct.pack(">I", epoch) + bytes([len(raw)]) + raw + bytes([probes])


@dataclass(frozen=True)
class Header:
    root: bytes
    epoch: int
    account: str
    probes: int
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


@dataclass(frozen=True)
class ParsedVoucher:
    header: Header
    probes: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    inner: bytes


def parse_header(blob: bytes) -> Header:
    if not isinstance(blob, bytes):
        raise VoucherError("a voucher is bytes")
    if len(blob) < len(MAGIC) + 32 + 4 + 2 or blob[:3] != MAGIC:
        raise VoucherError("not a Bastion voucher (bad magic or too short)")
    pos = 3
    root = blob[pos : pos + 32]
    pos += 32
    (epoch,) = struct.unpack_from(">I", blob, pos)
    pos += 4
    n = blob[pos]
    pos += 1
    if not 1 <= n <= MAX_ACCOUNT or len(blob) < pos + n + 1:
        raise VoucherError("voucher account field is malformed")
    try:
        account = check_account(blob[pos : pos + n].decode("utf-8"))
    except UnicodeDecodeError:
        raise VoucherError("voucher account is not UTF-8") from None
    pos += n
    probes = blob[pos]
    pos += 1
    return Header(root, epoch, account, probes, blob[:pos])


def parse_voucher(blob: bytes, params: Params) -> ParsedVoucher:
    """Split a voucher into header, probes and inner ciphertext, checking every size and that
    every Q is a canonical ristretto255 point (a hostile voucher fails here, precisely)."""
    header = parse_header(blob)
    if header.probes != params.probes:
        raise VoucherError(f"voucher has {header.probes} probes; this pdata uses {params.probes}")
    expected = voucher_bytes(params, header.account)
    if len(blob) != expected:
        raise VoucherError(f"voucher is {len(blob)} bytes; expected {expected}")
    pos = len(header.raw)
    size = probe_bytes(params)
    probes = []
    for i in range(params.probes):
        q = blob[pos : pos + g.POINT_BYTES]
        if not g.is_valid_point(q):
            raise VoucherError(f"probe {i}: Q is not a valid ristretto255 point")
        cts = tuple(
            blob[pos + g.POINT_BYTES + j * OUTER_CT : pos + g.POINT_BYTES + (j + 1) * OUTER_CT]
            for j in range(params.slots_per_key)
        )
        probes.append((q, cts))
        pos += size
    return ParsedVoucher(header, tuple(probes), blob[pos:])


@dataclass(frozen=True)
class Inner:
    """What a matching voucher reveals to the server: a share and two sealed parts."""

    x: int
    share: int
    row: tuple[int, ...]
    part_a: bytes
    part_b: bytes


def parse_inner(plain: bytes, params: Params) -> Inner:
    if len(plain) != inner_plain_bytes(params):
        raise VoucherError("inner payload has the wrong size")
    pos = 0
    x = int.from_bytes(plain[pos : pos + X_BYTES], "big")
    pos += X_BYTES
    share = from_bytes(plain[pos : pos + SHARE_BYTES], P_SHARE)
    pos += SHARE_BYTES
    row = []
    for _ in range(params.dhf_dim):
        row.append(from_bytes(plain[pos : pos + DHF_BYTES], P_DHF))
        pos += DHF_BYTES
    if not 0 < x < P_DHF:
        raise VoucherError("share x-coordinate out of range")
    part_a = plain[pos : pos + PART_A]
    pos += PART_A
    return Inner(x, share, tuple(row), part_a, plain[pos:])


def _part_key(account_key: int, label: bytes, x: int) -> bytes:
    return g.kdf(label, to_bytes(account_key, SHARE_BYTES), to_bytes(x, X_BYTES))


def part_aad(account: str, epoch: int, x: int) -> bytes:
    """Associated data of parts A and B: the account and epoch they belong to, and the share's
    x, so a part opens only in the group (account, epoch) it was sealed for."""
    raw = check_account(account).encode("utf-8")
    return _PART_AAD + bytes([len(raw)]) + raw + struct.pack(">I", epoch) + to_bytes(x, X_BYTES)


def seal_part_a(
    account_key: int,
    x: int,
    pdq: bytes,
    quality: int,
    random_bytes: g.RandomBytes,
    *,
    account: str,
    epoch: int,
) -> bytes:
    nonce = random_bytes(g.NONCE_BYTES)
    plain = bytes([_FMT_VERSION]) + pdq + bytes([max(0, min(100, quality))])
    key = _part_key(account_key, b"part-a", x)
    return nonce + g.seal(key, plain, part_aad(account, epoch, x), nonce)


def open_part_a(
    account_key: int, x: int, sealed: bytes, *, account: str, epoch: int
) -> tuple[bytes, int] | None:
    """(PDQ hash, quality) of a real item of ``account``'s ``epoch`` once K is known; None if
    it does not open (a synthetic voucher, another key, or another account or epoch)."""
    if len(sealed) != PART_A:
        return None
    key = _part_key(account_key, b"part-a", x)
    plain = g.open_sealed(
        key, sealed[g.NONCE_BYTES :], part_aad(account, epoch, x), sealed[: g.NONCE_BYTES]
    )
    if plain is None or len(plain) != PART_A_PLAIN or plain[0] != _FMT_VERSION:
        return None
    return plain[1:33], plain[33]


def seal_part_b(
    account_key: int,
    x: int,
    params: Params,
    item_id: str,
    media_type: str,
    media: bytes,
    random_bytes: g.RandomBytes,
    *,
    account: str,
    epoch: int,
) -> bytes:
    raw_id = item_id.encode("utf-8")
    raw_type = media_type.encode("ascii")
    head = _PART_B_HEAD.pack(len(raw_id), len(raw_type), len(media))
    plain = head + raw_id + raw_type + media
    if len(plain) > params.ad_bytes:
        raise VoucherError(
            f"item id, media type and derivative take {len(plain)} bytes; the limit is "
            f"{params.ad_bytes}"
        )
    plain += bytes(params.ad_bytes - len(plain))
    nonce = random_bytes(g.NONCE_BYTES)
    key = _part_key(account_key, b"part-b", x)
    return nonce + g.seal(key, plain, part_aad(account, epoch, x), nonce)


def open_part_b(
    account_key: int, x: int, sealed: bytes, *, account: str, epoch: int
) -> tuple[str, str, bytes] | None:
    """(item id, media type, derivative bytes), or None if it does not open or is malformed."""
    if len(sealed) < g.NONCE_BYTES + g.TAG_BYTES:
        return None
    key = _part_key(account_key, b"part-b", x)
    plain = g.open_sealed(
        key, sealed[g.NONCE_BYTES :], part_aad(account, epoch, x), sealed[: g.NONCE_BYTES]
    )
    if plain is None or len(plain) < _PART_B_HEAD.size:
        return None
    n_id, n_type, n_media = _PART_B_HEAD.unpack_from(plain, 0)
    pos = _PART_B_HEAD.size
    if pos + n_id + n_type + n_media > len(plain):
        return None
    try:
        item_id = plain[pos : pos + n_id].decode("utf-8")
        media_type = plain[pos + n_id : pos + n_id + n_type].decode("ascii")
    except UnicodeDecodeError:
        return None
    pos += n_id + n_type
    return item_id, media_type, plain[pos : pos + n_media]


def outer_key(header_digest: bytes, q: bytes, shared: bytes) -> bytes:
    return g.kdf(b"outer", header_digest, q, shared)


def _randbelow(n: int, random_bytes: g.RandomBytes) -> int:
    limit = (1 << 64) - (1 << 64) % n
    while True:
        r = int.from_bytes(random_bytes(8), "big")
        if r < limit:
            return r % n


_T = TypeVar("_T")


def _shuffle(items: list[_T], random_bytes: g.RandomBytes) -> None:
    for i in range(len(items) - 1, 0, -1):
        j = _randbelow(i + 1, random_bytes)
        items[i], items[j] = items[j], items[i]


@dataclass(frozen=True)
class Voucher:
    """A voucher's bytes (``data``, what is sent) and what only the device knows about it."""

    data: bytes
    epoch: int
    #: The account the voucher is sealed for (also in its header). The platform states the
    #: sender it authenticated beside every voucher it forwards; the server refuses a mismatch.
    account: str
    #: Local knowledge, never sent: whether this voucher is synthetic.
    synthetic: bool
    #: Local knowledge, never sent: the item's PDQ hash and the keys probed.
    pdq: str
    probed: int


class Client:
    """Makes vouchers for one account against one pdata table.

    ``random_bytes`` is the only source of randomness (tests pass a seeded one); ``clock`` gives
    the time that picks the epoch.

    The table must have been loaded against a pinned root (``PData.from_bytes(blob,
    expected_root=...)``); any other table (say, one from ``PData.parse_unchecked``) raises
    :class:`RootPinError` unless ``insecure_skip_root_pin=True``, which is UNSAFE (the device
    would seal its items for whatever table it was handed). Its parameters are checked again
    against the bounds it was loaded with (:class:`Bounds` by default): a table outside them
    raises :class:`UnsafeParamsError`.
    """

    def __init__(
        self,
        pdata: PData,
        account_id: str,
        account: Account,
        *,
        insecure_skip_root_pin: bool = False,
        random_bytes: g.RandomBytes = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if pdata.root_pin == PIN_NONE:
            if not insecure_skip_root_pin:
                raise RootPinError(
                    "this table was not loaded against a pinned root: load it with "
                    "PData.from_bytes(blob, expected_root=...) (insecure_skip_root_pin=True "
                    "skips the check and is unsafe)"
                )
            warnings.warn(
                f"Client uses pdata {pdata.root} with insecure_skip_root_pin=True: its root "
                "was not checked against a pinned root",
                InsecureTableWarning,
                stacklevel=2,
            )
        (pdata.bounds or DEFAULT_BOUNDS).check(pdata.params, pdata.n_slots)
        self.pdata = pdata
        self.params = pdata.params
        self.account_id = check_account(account_id)
        self.account = account
        self.random_bytes = random_bytes
        self.clock = clock

    def epoch(self) -> int:
        return int(self.clock() // self.params.epoch_seconds)

    def _keys(self, epoch: int) -> EpochKeys:
        return self.account.keys(epoch, self.params.threshold, self.params.dhf_dim)

    def voucher_for_image(self, data: bytes, item_id: str, *, epoch: int | None = None) -> Voucher:
        """Hash an encoded image on the device and make its voucher (with its derivative)."""
        hashed, media = hash_and_derivative(data, self.derivative_budget(item_id))
        return self.voucher_for_hash(hashed, item_id, media=media, epoch=epoch)

    def derivative_budget(self, item_id: str, media_type: str = "image/jpeg") -> int:
        """Bytes left for the derivative once the item id and media type are in part B."""
        used = _PART_B_HEAD.size + len(item_id.encode("utf-8")) + len(media_type)
        return self.params.ad_bytes - used

    def voucher_for_hash(
        self,
        hashed: ImageHash | bytes | str,
        item_id: str,
        *,
        media: bytes = b"",
        media_type: str = "image/jpeg",
        epoch: int | None = None,
    ) -> Voucher:
        """A voucher for an item already hashed. Pass an :class:`ImageHash` (with its floats) for
        the best near-match recall; bare bytes or hex give the chunk probes without them."""
        if isinstance(hashed, ImageHash):
            pdq, floats, quality = hashed.hash, hashed.floats, hashed.quality
        else:
            pdq = bytes.fromhex(hashed) if isinstance(hashed, str) else hashed
            floats, quality = None, 100
        if len(pdq) != 32:
            raise VoucherError("a PDQ hash is 32 bytes (64 hex digits)")
        if not isinstance(item_id, str) or len(item_id.encode("utf-8")) > MAX_ITEM_ID:
            raise VoucherError(f"item_id must be text of at most {MAX_ITEM_ID} bytes")
        epoch = self.epoch() if epoch is None else epoch
        keys = self._keys(epoch)
        x = keys.x_for(pdq)
        header = encode_header(self.pdata.root_bytes, epoch, self.account_id, self.params.probes)
        hd = hashlib.sha256(header).digest()
        rkey = self.random_bytes(g.KEY_BYTES)
        synthetic = self._synthetic(keys, epoch, pdq, x)
        if synthetic:
            probes = self._synthetic_probes(hd, rkey)
            share, row = keys.dummy(x)
            part_a = self.random_bytes(PART_A)
            part_b = self.random_bytes(part_b_bytes(self.params))
            probed = 0
        else:
            wanted = (
                [] if quality < self.params.min_quality else probe_keys(pdq, floats, self.params)
            )
            probes = [self._probe(hd, key, rkey) for key in wanted]
            probed = len(probes)
            probes += [self._random_probe() for _ in range(self.params.probes - len(probes))]
            _shuffle(probes, self.random_bytes)
            share, row = keys.share(x), keys.dhf_row(x)
            account = self.account_id
            part_a = seal_part_a(
                keys.key, x, pdq, quality, self.random_bytes, account=account, epoch=epoch
            )
            part_b = seal_part_b(
                keys.key,
                x,
                self.params,
                item_id,
                media_type,
                media,
                self.random_bytes,
                account=account,
                epoch=epoch,
            )
        inner = (
            to_bytes(x, X_BYTES)
            + to_bytes(share, SHARE_BYTES)
            + b"".join(to_bytes(v, DHF_BYTES) for v in row)
            + part_a
            + part_b
        )
        data = header + b"".join(probes) + g.seal(rkey, inner, header)
        return Voucher(data, epoch, self.account_id, synthetic, pdq.hex(), probed)

    def _synthetic(self, keys: EpochKeys, epoch: int, pdq: bytes, x: int) -> bool:
        sent = self.account.synthetic.setdefault(epoch, [])
        tag = format(x, "x")
        if tag in sent:
            return True
        if len(sent) < self.params.dhf_dim and keys.coin(pdq, self.params.synthetic_ppm):
            sent.append(tag)
            return True
        return False

    def _probe(self, hd: bytes, key: bytes, rkey: bytes) -> bytes:
        hy = g.hash_to_group(key)
        b = g.random_scalar(self.random_bytes)
        c = g.random_scalar(self.random_bytes)
        q = g.add(g.mul(b, hy), g.mul_base(c))
        c_l = g.mul(c, self.pdata.public)
        cts = [
            g.seal(outer_key(hd, q, g.add(g.mul(b, self.pdata.slot(w)), c_l)), rkey)
            for w in self.pdata.slots_for(key)
        ]
        _shuffle(cts, self.random_bytes)
        return q + b"".join(cts)

    def _random_probe(self) -> bytes:
        q = g.random_point(self.random_bytes)
        return q + self.random_bytes(OUTER_CT * self.params.slots_per_key)

    def _synthetic_probes(self, hd: bytes, rkey: bytes) -> list[bytes]:
        """All probes random except one ciphertext that always opens: Q = r·G and
        S = r·L = a·Q, which any holder of L can make without knowing a bank entry."""
        probes = [self._random_probe() for _ in range(self.params.probes)]
        r = g.random_scalar(self.random_bytes)
        q = g.mul_base(r)
        ct = g.seal(outer_key(hd, q, g.mul(r, self.pdata.public)), rkey)
        cts = [ct] + [self.random_bytes(OUTER_CT) for _ in range(self.params.slots_per_key - 1)]
        _shuffle(cts, self.random_bytes)
        probes[_randbelow(len(probes), self.random_bytes)] = q + b"".join(cts)
        return probes


__all__ = [
    "Client",
    "Header",
    "Inner",
    "ParsedVoucher",
    "Voucher",
    "VoucherError",
    "open_part_a",
    "open_part_b",
    "parse_header",
    "parse_inner",
    "parse_voucher",
    "part_aad",
    "voucher_bytes",
]
