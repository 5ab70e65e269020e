"""pdata: the blinded bank table every client downloads, its parameters, and its SHA-256 root.

Layout (version 1, big-endian)::

    magic "BPD1" | mode u8 | chunks u8 | probes u8 | max_flips u8 | weak_bits u8 | key_bits u8
    | min_quality u8 | threshold u16 | dhf_dim u16
    | synthetic_ppm u32 | epoch_seconds u32 | ad_bytes u32
    | n_buckets u32 | bucket_size u8 | cuckoo seed (16) | L = a·G (32) | created (u64 unix s)
    | label length u16 | label (UTF-8)
    | slots: n_buckets * bucket_size points of 32 bytes

The root is SHA-256 over a domain label, the header and the slots: every byte a client uses to
build a voucher, parameters included, is covered, so two clients holding the same root hold the
same table and the same rules (threshold, synthetic rate, ...). The server publishes the root
(``GET /v1/pdata/root``); a platform pins it in its app release or a transparency log, and
``PData.from_bytes(blob, expected_root=...)`` refuses anything else. The pin is mandatory: only
the loudly named ``insecure_skip_root_pin=True`` loads a table without one.

A root only says every client got the same table, not that its rules are safe: a malicious or
compromised server can publish a rooted table with t = 2 or no synthetic vouchers. So a client
also holds every published parameter to floors and ceilings of its own (:class:`Bounds`, the
reasons beside each) and refuses a table outside them with :class:`UnsafeParamsError`.

A slot holds ``a·H(key)`` for a bank key placed there, or a random point. Keys live in a cuckoo
table with two hash functions and ``bucket_size`` slots per bucket, so a key is in one of exactly
``2 * bucket_size`` slots that anyone can compute from the key; no stash (see
``bastion.psi.build``): a table is only published when every key has a slot.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bastion.client.group import DOMAIN, POINT_BYTES, is_valid_point

MAGIC = b"BPD1"
MODE_EXACT = 0
MODE_NEAR = 1
MODE_COMPACT = 2
MODES = {"exact": MODE_EXACT, "near": MODE_NEAR, "compact": MODE_COMPACT}
_HEADER = struct.Struct(">4sBBBBBBBHHIIIIB16s32sQH")
MAX_LABEL = 1024
MAX_BUCKETS = 1 << 28
PIN_VERIFIED, PIN_SKIPPED, PIN_NONE = "verified", "insecure-skipped", ""


class PDataError(ValueError):
    """A pdata blob that is malformed, has unsafe parameters, or does not match its root."""


class UnsafeParamsError(PDataError):
    """A well-formed table whose published parameters are outside the client's :class:`Bounds`.

    ``violations`` names each parameter, its value and the allowed range."""

    def __init__(self, violations: Sequence[str]) -> None:
        self.violations = tuple(violations)
        super().__init__(
            "refusing a pdata table whose parameters are outside this client's bounds: "
            + "; ".join(self.violations)
        )


class RootPinError(PDataError):
    """No pinned root was given (and the insecure opt-out was not), or the table's root is not
    the pinned one: a client would otherwise accept whatever table the server hands it."""


class InsecureTableWarning(UserWarning):
    """A table was loaded or used with ``insecure_skip_root_pin=True``."""


@dataclass(frozen=True)
class Params:
    """Protocol parameters, published inside pdata so every client applies the same ones.

    ``mode``: compact (the default: one key per bank entry, the ``key_bits`` lowest-frequency bits
    of the PDQ hash; a client probes ``probes`` variants of that projection, flipping at most
    ``max_flips`` of its ``weak_bits`` least reliable bits), exact (one key per entry: the whole
    256-bit hash) or near (``chunks`` chunk keys per entry; a client probes around its most
    reliable chunk). :meth:`for_mode` fills in each mode's other defaults. ``threshold`` t:
    matches an account needs before anything opens. ``dhf_dim`` s: how many synthetic vouchers
    per account and epoch the server can still tell apart from real ones (and the cap a client
    keeps to).
    ``synthetic_ppm``: the probability, in millionths, that a voucher is synthetic.
    """

    mode: int = MODE_COMPACT
    chunks: int = 1
    probes: int = 12
    max_flips: int = 3
    weak_bits: int = 10
    key_bits: int = 52
    min_quality: int = 50
    threshold: int = 10
    dhf_dim: int = 32
    synthetic_ppm: int = 50_000
    epoch_seconds: int = 30 * 86400
    ad_bytes: int = 8192
    bucket_size: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES.values():
            problems.append(
                f"mode must be {MODE_EXACT} (exact), {MODE_NEAR} (near) or {MODE_COMPACT} (compact)"
            )
        if self.mode == MODE_NEAR and not 4 <= self.chunks <= 16:
            problems.append("chunks must be 4-16 (each chunk at most 64 bits)")
        if self.mode == MODE_EXACT and (self.chunks != 1 or self.probes != 1):
            problems.append("exact mode has one chunk and one probe")
        if self.mode == MODE_COMPACT and self.chunks != 1:
            problems.append("compact mode has one projection (chunks must be 1)")
        if not 32 <= self.key_bits <= 64:
            problems.append("key_bits must be 32-64")
        if not 1 <= self.probes <= 64:
            problems.append("probes must be 1-64")
        if not 0 <= self.max_flips <= 3 or not self.max_flips <= self.weak_bits <= 16:
            problems.append("max_flips must be 0-3 and weak_bits max_flips-16")
        if not 0 <= self.min_quality <= 100:
            problems.append("min_quality must be 0-100")
        if not 2 <= self.threshold <= 1000:
            problems.append("threshold must be 2-1000")
        if not 1 <= self.dhf_dim <= 512:
            problems.append("dhf_dim must be 1-512")
        if not 0 <= self.synthetic_ppm <= 500_000:
            problems.append("synthetic_ppm must be 0-500000 (a rate of at most 0.5)")
        if not 3600 <= self.epoch_seconds <= 366 * 86400:
            problems.append("epoch_seconds must be an hour to a year")
        if not 512 <= self.ad_bytes <= 1 << 20:
            problems.append("ad_bytes must be 512 bytes to 1 MiB")
        if not 1 <= self.bucket_size <= 8:
            problems.append("bucket_size must be 1-8")
        if problems:
            raise PDataError("invalid pdata parameters: " + "; ".join(problems))

    @classmethod
    def for_mode(cls, mode: str | int, **overrides: int) -> Params:
        """Parameters for ``mode`` ("compact", "near", "exact" or its number) with that mode's
        own locality defaults, so callers need not know which fields each mode constrains."""
        number = MODES.get(mode, -1) if isinstance(mode, str) else mode
        if number not in MODE_DEFAULTS:
            raise PDataError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(**{**MODE_DEFAULTS[number], **overrides})

    @property
    def mode_name(self) -> str:
        return next(name for name, number in MODES.items() if number == self.mode)

    @property
    def synthetic_rate(self) -> float:
        return self.synthetic_ppm / 1_000_000

    @property
    def slots_per_key(self) -> int:
        return 2 * self.bucket_size


#: Each mode's locality fields (measured choices: docs/benchmarks.md, issue 7).
MODE_DEFAULTS: dict[int, dict[str, int]] = {
    MODE_COMPACT: {
        "mode": MODE_COMPACT,
        "chunks": 1,
        "probes": 12,
        "max_flips": 3,
        "weak_bits": 10,
    },
    MODE_NEAR: {"mode": MODE_NEAR, "chunks": 5, "probes": 8, "max_flips": 2, "weak_bits": 8},
    MODE_EXACT: {"mode": MODE_EXACT, "chunks": 1, "probes": 1, "max_flips": 0, "weak_bits": 0},
}


DAY = 86400


def probe_key_bits(params: Params) -> int:
    """Bits of the shortest key a probe tests: the whole hash (exact), the projection (compact)
    or the narrowest chunk (near; the first ``256 % chunks`` chunks get one bit more)."""
    if params.mode == MODE_EXACT:
        return 256
    if params.mode == MODE_COMPACT:
        return params.key_bits
    return 256 // params.chunks


def probe_bits(params: Params) -> float:
    """``key bits - log2(probes)``: an unrelated item hits one table key with probability about
    ``probes / 2^key_bits``, so this is the false-positive budget in bits (higher is safer)."""
    return probe_key_bits(params) - math.log2(params.probes)


@dataclass(frozen=True)
class Bounds:
    """The floors and ceilings a client holds every published table to, whatever its root.

    Each range is inclusive ``(lowest, highest)``. The defaults admit the server's default
    parameters in every mode with room either side, and refuse what a malicious server would
    publish to weaken the privacy of users (or to burden their devices):

    * ``threshold`` t 5-100: t is what keeps a few false positives or forced collisions
      (``docs/e2ee.md``: crafted images are practical) from opening an account; at t = 2 two
      crafted images open one. Above 100 matching is in effect off, and the detection matrix
      ((t-1) x s per epoch, a row per voucher) becomes a real cost on the device.
    * ``synthetic_ppm`` 1%-50%: synthetic vouchers are the only thing that hides how many of an
      account's items matched below t; at 0 every opening is a real match. Above one in two the
      cover costs more vouchers than it hides (and the structural limit is 0.5).
    * ``dhf_dim`` s 16-256: the synthetic vouchers a device may send per epoch; with s tiny the
      cover runs out after a few items, after which openings are real. Each unit is 16 bytes in
      every voucher and t-1 multiplications per voucher on the device.
    * ``epoch_seconds`` 1-90 days: shares only add up within an epoch, so a year-long epoch lets
      a year of false positives reach t and spreads s synthetic vouchers over a year. Epochs
      under a day buy no privacy and grow the synthetic state a platform stores per user.
    * ``ad_bytes`` 1-16 KiB: the room in part B for the item id and the derivative, which is
      what a reviewer sees once an account opens. The client shrinks its JPEG (160 px at most)
      until it fits, so the room decides the detail: 8 KiB by default; 1 MiB is a full photo.
    * ``min_quality`` 50-100: PDQ hashes below quality 50 are of flat, featureless images that
      match unrelated flat images; probing them would open innocent items.
    * ``probes`` 1-16 and ``probe_bits`` >= 48: a table key of ``key_bits`` bits hit by any of
      ``probes`` probes lets an unrelated item through with probability ``probes * N / 2^bits``
      for N entries; 48 bits bound that to 3.6e-9 per item at a million entries (compact
      default: 12 probes of 52 bits, 48.4; near: 8 probes of 51-bit chunks, 48.0). This is
      what bounds ``key_bits``, ``chunks``, ``max_flips`` and ``weak_bits`` together; the
      latter three only choose which keys are probed (structural limits in :class:`Params`).
    * ``bucket_size`` 1-4: each probe carries ``2 * bucket_size`` ciphertexts.
    * ``max_slots`` 2^25 (1 GiB): every device downloads the whole table.

    Not bounded: ``mode`` (each mode is covered by the rules above), the cuckoo seed, L (checked
    to be a valid point), ``created`` and ``label`` (covered by the root, no protocol meaning).

    Loosening a bound hands back to the server what it takes away; tests and benchmarks that
    explore other parameters pass their own :class:`Bounds` explicitly.
    """

    threshold: tuple[int, int] = (5, 100)
    synthetic_ppm: tuple[int, int] = (10_000, 500_000)
    dhf_dim: tuple[int, int] = (16, 256)
    epoch_seconds: tuple[int, int] = (DAY, 90 * DAY)
    ad_bytes: tuple[int, int] = (1024, 16 * 1024)
    min_quality: tuple[int, int] = (50, 100)
    probes: tuple[int, int] = (1, 16)
    probe_bits: float = 48.0
    bucket_size: tuple[int, int] = (1, 4)
    max_slots: int = 1 << 25

    def violations(self, params: Params, n_slots: int = 0) -> list[str]:
        """Each parameter outside these bounds, with its value and the allowed range; every
        message starts with the parameter's name."""
        out = []
        for name in _BOUNDED:
            lo, hi = getattr(self, name)
            value = getattr(params, name)
            if not lo <= value <= hi:
                scale, unit = _UNITS.get(name, (0, ""))
                human = (
                    f" ({value / scale:g}{unit}; allowed {lo / scale:g}-{hi / scale:g}{unit})"
                    if scale
                    else ""
                )
                out.append(f"{name} {value} is outside {lo}-{hi}{human}")
        bits = probe_bits(params)
        if bits < self.probe_bits:
            out.append(
                f"probe_bits {bits:.1f} is below {self.probe_bits:g}: {params.probes} probes of "
                f"{probe_key_bits(params)}-bit keys let unrelated items through too often"
            )
        if n_slots > self.max_slots:
            out.append(f"max_slots: the table has {n_slots} slots; at most {self.max_slots}")
        return out

    def check(self, params: Params, n_slots: int = 0) -> None:
        """Raise :class:`UnsafeParamsError` naming every parameter outside these bounds."""
        problems = self.violations(params, n_slots)
        if problems:
            raise UnsafeParamsError(problems)


#: The bounds a client applies unless told otherwise.
DEFAULT_BOUNDS = Bounds()
_BOUNDED = (
    "threshold",
    "synthetic_ppm",
    "dhf_dim",
    "epoch_seconds",
    "ad_bytes",
    "min_quality",
    "probes",
    "bucket_size",
)
_UNITS = {"synthetic_ppm": (10_000, "%"), "epoch_seconds": (DAY, " days")}


def cuckoo_buckets(seed: bytes, n_buckets: int, key: bytes) -> tuple[int, int]:
    """The two candidate buckets of ``key``; always distinct, so a key has 2 * bucket_size
    distinct slots and a match can decrypt at most one of a probe's ciphertexts."""
    d = hashlib.sha256(DOMAIN + b"cuckoo\x00" + seed + key).digest()
    h0 = int.from_bytes(d[:8], "big") % n_buckets
    h1 = (h0 + 1 + int.from_bytes(d[8:16], "big") % (n_buckets - 1)) % n_buckets
    return h0, h1


def candidate_slots(seed: bytes, n_buckets: int, bucket_size: int, key: bytes) -> list[int]:
    h0, h1 = cuckoo_buckets(seed, n_buckets, key)
    return [h * bucket_size + i for h in (h0, h1) for i in range(bucket_size)]


@dataclass(frozen=True)
class PData:
    """A parsed pdata table. ``root`` is the hex SHA-256 root; ``blob`` the exact bytes.

    Clients load one with :meth:`from_bytes` (pinned root, bounds); :meth:`parse_unchecked` is
    the server's and an auditor's view of the same bytes."""

    params: Params
    n_buckets: int
    seed: bytes
    public: bytes  # L = a·G
    created: int
    label: str
    blob: bytes = field(repr=False)
    slots_offset: int = field(repr=False)
    root: str = ""
    #: How the root was checked when the table was loaded: ``PIN_VERIFIED`` (it equals a pinned
    #: root), ``PIN_SKIPPED`` (the insecure opt-out) or ``PIN_NONE`` (parsed without a client's
    #: checks, e.g. by the server that built it).
    root_pin: str = field(default=PIN_NONE, repr=False)
    #: The bounds the parameters were checked against on loading (None: not checked).
    bounds: Bounds | None = field(default=None, repr=False, compare=False)

    @property
    def n_slots(self) -> int:
        return self.n_buckets * self.params.bucket_size

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)

    def slot(self, index: int) -> bytes:
        start = self.slots_offset + index * POINT_BYTES
        return self.blob[start : start + POINT_BYTES]

    def slots_for(self, key: bytes) -> list[int]:
        return candidate_slots(self.seed, self.n_buckets, self.params.bucket_size, key)

    @classmethod
    def from_bytes(
        cls,
        blob: bytes,
        *,
        expected_root: str | bytes | None,
        insecure_skip_root_pin: bool = False,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> PData:
        """Load a table on a client: parse it, check its root against the pinned
        ``expected_root`` (hex or 32 bytes; :class:`RootPinError` if it differs) and its
        parameters against ``bounds`` (:class:`UnsafeParamsError`).

        ``expected_root`` must be given. ``None`` is accepted only with
        ``insecure_skip_root_pin=True``, which is UNSAFE: the client then builds vouchers
        against whatever table this server (or anyone between) sends, possibly one made for
        this user alone; the bounds are still applied. It warns (:class:`InsecureTableWarning`).
        """
        pin = _pin_bytes(expected_root) if expected_root is not None else None
        if pin is None and not insecure_skip_root_pin:
            raise RootPinError(
                "expected_root is required: pin the root published for this table (in the app "
                "release or a transparency log); insecure_skip_root_pin=True skips the check "
                "and is unsafe"
            )
        pdata = cls.parse_unchecked(blob)
        if pin is None:
            warnings.warn(
                f"pdata {pdata.root} loaded with insecure_skip_root_pin=True: its root was "
                "not checked against a pinned root",
                InsecureTableWarning,
                stacklevel=2,
            )
        elif not hmac.compare_digest(pdata.root_bytes, pin):
            raise RootPinError(
                f"pdata root {pdata.root} does not match the expected root {pin.hex()}: "
                "refusing a table that differs from the published one"
            )
        bounds.check(pdata.params, pdata.n_slots)
        return replace(pdata, root_pin=PIN_SKIPPED if pin is None else PIN_VERIFIED, bounds=bounds)

    @classmethod
    def parse_unchecked(cls, blob: bytes) -> PData:
        """Parse and check a blob's structure only: no root pin, no client bounds. For the
        server that built the table and for auditors; a :class:`Client` refuses such a table
        unless told ``insecure_skip_root_pin=True``, and still applies its bounds."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise PDataError("pdata must be bytes")
        blob = bytes(blob)
        if len(blob) < _HEADER.size:
            raise PDataError(f"pdata is {len(blob)} bytes, shorter than its header")
        fields_ = _HEADER.unpack_from(blob, 0)
        magic, mode, chunks, probes, max_flips, weak_bits, key_bits, min_quality = fields_[:8]
        threshold, dhf_dim, ppm, epoch_seconds, ad_bytes, n_buckets, bucket_size = fields_[8:15]
        seed, public, created, label_len = fields_[15:]
        if magic != MAGIC:
            raise PDataError("not a Bastion pdata table (bad magic or unsupported version)")
        params = Params(
            mode=mode,
            chunks=chunks,
            probes=probes,
            max_flips=max_flips,
            weak_bits=weak_bits,
            key_bits=key_bits,
            min_quality=min_quality,
            threshold=threshold,
            dhf_dim=dhf_dim,
            synthetic_ppm=ppm,
            epoch_seconds=epoch_seconds,
            ad_bytes=ad_bytes,
            bucket_size=bucket_size,
        )
        if not 2 <= n_buckets <= MAX_BUCKETS:
            raise PDataError(f"pdata has {n_buckets} buckets; expected 2 to {MAX_BUCKETS}")
        if label_len > MAX_LABEL:
            raise PDataError("pdata label is too long")
        offset = _HEADER.size + label_len
        expected = offset + n_buckets * bucket_size * POINT_BYTES
        if len(blob) != expected:
            raise PDataError(f"pdata is {len(blob)} bytes; its header says {expected}")
        try:
            label = blob[_HEADER.size : offset].decode("utf-8")
        except UnicodeDecodeError:
            raise PDataError("pdata label is not UTF-8") from None
        if not is_valid_point(public):
            raise PDataError("pdata public point L is not a valid ristretto255 point")
        root = pdata_root(blob)
        return cls(params, n_buckets, seed, public, created, label, blob, offset, root)


_HEX_ROOT = re.compile(r"[0-9a-fA-F]{64}")


def _pin_bytes(expected_root: str | bytes) -> bytes:
    """A pinned root as 32 bytes; anything else (empty, short, not hex) is refused, never
    treated as "no pin"."""
    if isinstance(expected_root, bytes) and len(expected_root) == 32:
        return expected_root
    if isinstance(expected_root, str) and _HEX_ROOT.fullmatch(expected_root):
        return bytes.fromhex(expected_root)
    raise RootPinError("expected_root must be a SHA-256 root: 64 hex digits or 32 bytes")


def pdata_root(blob: bytes) -> str:
    """Hex SHA-256 root of a serialised table (header and slots)."""
    return hashlib.sha256(DOMAIN + b"pdata-root\x00" + blob).hexdigest()


def serialize(
    params: Params,
    *,
    n_buckets: int,
    seed: bytes,
    public: bytes,
    created: int,
    label: str,
    slots: bytes,
) -> bytes:
    """The canonical bytes of a table (the server's builder calls this)."""
    raw_label = label.encode("utf-8")
    if len(raw_label) > MAX_LABEL:
        raise PDataError("pdata label is too long")
    if len(seed) != 16 or len(public) != POINT_BYTES:
        raise PDataError("seed is 16 bytes and L is 32")
    if len(slots) != n_buckets * params.bucket_size * POINT_BYTES:
        raise PDataError("slot bytes do not match the table size")
    header = _HEADER.pack(
        MAGIC,
        params.mode,
        params.chunks,
        params.probes,
        params.max_flips,
        params.weak_bits,
        params.key_bits,
        params.min_quality,
        params.threshold,
        params.dhf_dim,
        params.synthetic_ppm,
        params.epoch_seconds,
        params.ad_bytes,
        n_buckets,
        params.bucket_size,
        seed,
        public,
        created,
        len(raw_label),
    )
    return header + raw_label + slots
