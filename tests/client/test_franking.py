"""Message franking: commitments, the recipient's check, committing encryption, and an actual
invisible-salamander ciphertext against plain AES-GCM."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.client import CommittingAead, FrankingError, commit, frank, receive, verify_commitment
from bastion.psi import Report, ReportRejected, platform_tag, verify_report

PLATFORM_KEY = bytes(range(32))


def test_frank_and_receive_round_trip() -> None:
    franked = frank(b"see you at 6")
    assert franked.commitment == commit(franked.franking_key, b"see you at 6")
    assert receive(franked.payload, franked.commitment) == (b"see you at 6", franked.franking_key)
    other = frank(b"see you at 6")
    assert other.franking_key != franked.franking_key and other.commitment != franked.commitment
    with pytest.raises(FrankingError, match="drop it"):
        receive(franked.payload, other.commitment)
    with pytest.raises(FrankingError, match="truncated"):
        receive(franked.payload[:-1], franked.commitment)
    with pytest.raises(FrankingError, match="not a franked"):
        receive(b"hello", franked.commitment)
    assert not verify_commitment(
        franked.franking_key + b"\x00", b"see you at 6", franked.commitment
    )
    with pytest.raises(FrankingError, match="32 bytes"):
        commit(b"short", b"m")


def test_a_genuine_report_verifies_and_forged_or_altered_ones_do_not() -> None:
    franked = frank(b"the message")
    tag = platform_tag(PLATFORM_KEY, franked.commitment, "alice", "bob", 1_780_000_000)
    genuine = Report(
        b"the message", franked.franking_key, franked.commitment, tag, "alice", "bob", 1_780_000_000
    )
    verify_report(PLATFORM_KEY, genuine)
    forged = {
        "altered message": Report(b"the massage", *_rest(genuine)),
        "other sender": Report(
            genuine.message,
            genuine.franking_key,
            genuine.commitment,
            tag,
            "mallory",
            "bob",
            genuine.timestamp,
        ),
        "other time": Report(
            genuine.message,
            genuine.franking_key,
            genuine.commitment,
            tag,
            "alice",
            "bob",
            genuine.timestamp - 3600,
        ),
        "tag made by a user": Report(
            genuine.message,
            genuine.franking_key,
            genuine.commitment,
            platform_tag(os.urandom(32), genuine.commitment, "alice", "bob", genuine.timestamp),
            "alice",
            "bob",
            genuine.timestamp,
        ),
        "other franking key": Report(
            genuine.message,
            os.urandom(32),
            genuine.commitment,
            tag,
            "alice",
            "bob",
            genuine.timestamp,
        ),
    }
    for name, report in forged.items():
        with pytest.raises(ReportRejected):
            verify_report(PLATFORM_KEY, report)
            pytest.fail(f"{name} was accepted")
    # Field boundaries are unambiguous: "ab"+"c" is not "a"+"bc".
    assert platform_tag(PLATFORM_KEY, franked.commitment, "ab", "c", 1) != platform_tag(
        PLATFORM_KEY, franked.commitment, "a", "bc", 1
    )


def _rest(r: Report) -> tuple:
    return (r.franking_key, r.commitment, r.tag, r.sender, r.recipient, r.timestamp)


def test_committing_aead_opens_under_one_key_only() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    blob = CommittingAead(k1).encrypt(b"payload", b"aad")
    assert CommittingAead(k1).decrypt(blob, b"aad") == b"payload"
    with pytest.raises(FrankingError, match="not committed"):
        CommittingAead(k2).decrypt(blob, b"aad")
    with pytest.raises(FrankingError, match="does not decrypt"):
        CommittingAead(k1).decrypt(blob, b"other aad")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(FrankingError):
        CommittingAead(k1).decrypt(bytes(tampered), b"aad")


# -- an invisible salamander: one AES-GCM ciphertext, valid under two keys ---------------------
_R = 0xE1 << 120


def _gf_mul(x: int, y: int) -> int:
    """Multiplication in GCM's GF(2^128) (NIST SP 800-38D, bit-reflected)."""
    z, v = 0, y
    for i in range(128):
        if (x >> (127 - i)) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _gf_pow(x: int, e: int) -> int:
    result = 1 << 127  # the field's one
    while e:
        if e & 1:
            result = _gf_mul(result, x)
        x = _gf_mul(x, x)
        e >>= 1
    return result


def _aes(key: bytes, block: bytes) -> int:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return int.from_bytes(enc.update(block) + enc.finalize(), "big")


def _salamander(k1: bytes, k2: bytes, nonce: bytes, plain1: bytes, free: int) -> bytes:
    """Ciphertext+tag that AES-GCM accepts under k1 (decrypting to ``plain1`` except block
    ``free``) and under k2. Length a multiple of 16, no associated data."""
    n = len(plain1) // 16
    h1, h2 = _aes(k1, bytes(16)), _aes(k2, bytes(16))
    j0 = nonce + b"\x00\x00\x00\x01"

    def keystream(key: bytes, i: int) -> int:
        counter = nonce + (2 + i).to_bytes(4, "big")
        return _aes(key, counter)

    c = [int.from_bytes(plain1[16 * i : 16 * i + 16], "big") ^ keystream(k1, i) for i in range(n)]
    length = (len(plain1) * 8).to_bytes(16, "big")
    lb = int.from_bytes(length, "big")
    e1, e2 = _aes(k1, j0), _aes(k2, j0)
    # GHASH_H(C) = sum C_i H^(n+1-i) (i from 0) + L H; make both tags equal, solving for C_free.
    acc = _gf_mul(lb, h1 ^ h2) ^ e1 ^ e2
    for i in range(n):
        if i != free:
            acc ^= _gf_mul(c[i], _gf_pow(h1, n + 1 - i) ^ _gf_pow(h2, n + 1 - i))
    coeff = _gf_pow(h1, n + 1 - free) ^ _gf_pow(h2, n + 1 - free)
    c[free] = _gf_mul(acc, _gf_pow(coeff, 2**128 - 2))
    ghash = _gf_mul(lb, h1)
    for i in range(n):
        ghash ^= _gf_mul(c[i], _gf_pow(h1, n + 1 - i))
    tag = ghash ^ e1
    return b"".join(x.to_bytes(16, "big") for x in c) + tag.to_bytes(16, "big")


def test_invisible_salamander_is_caught_by_the_franking_check() -> None:
    k1, k2, nonce = os.urandom(32), os.urandom(32), os.urandom(12)
    franking_key = os.urandom(32)
    message = b"hello bob! " + bytes(41)  # 52 bytes; block 3 of the payload gets forced
    payload = b"BFR1" + franking_key + len(message).to_bytes(8, "big") + message
    assert len(payload) == 96
    blob = _salamander(k1, k2, nonce, payload, free=3)
    plain1 = AESGCM(k1).decrypt(nonce, blob, None)  # plain AES-GCM accepts it under k1 ...
    plain2 = AESGCM(k2).decrypt(nonce, blob, None)  # ... and under k2: not key-committing
    assert plain1 != plain2 and plain1[:48] == payload[:48] and plain1[64:] == payload[64:]
    # The sender commits to what k1 opens to; a recipient holding k2 sees something else.
    commitment = commit(franking_key, plain1[44:])
    assert receive(plain1, commitment)[0] == plain1[44:]
    with pytest.raises(FrankingError):
        receive(plain2, commitment)  # dropped, never displayed: nothing unreportable is shown
    # What the k1 recipient saw is reportable; nothing else can be passed off under that tag.
    tag = platform_tag(PLATFORM_KEY, commitment, "mallory", "bob", 5)
    verify_report(
        PLATFORM_KEY, Report(plain1[44:], franking_key, commitment, tag, "mallory", "bob", 5)
    )
    with pytest.raises(ReportRejected):
        verify_report(
            PLATFORM_KEY, Report(plain2[44:], franking_key, commitment, tag, "mallory", "bob", 5)
        )
    # A committing AEAD would not have let the sender build such a ciphertext at all.
    with pytest.raises(FrankingError):
        CommittingAead(k2).decrypt(CommittingAead(k1).encrypt(payload), None)
