"""The pure account rules: names, roles, queues, password policy, argon2id hashing, tokens."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from bastion.accounts import model as acc
from bastion.accounts.model import (
    LOGIN_FAILED_MESSAGE,
    ROLES,
    LoginFailed,
    LoginLocked,
    LoginThrottled,
    PasswordHasher,
    check_password,
    csrf_matches,
    new_csrf_token,
    new_session_token,
    token_digest,
    validate_queues,
    validate_role,
    validate_user_name,
    well_formed_token,
)

FAST = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


def test_user_names_are_lowercased_and_checked() -> None:
    assert validate_user_name("Alice.Smith-2") == "alice.smith-2"
    for bad in ["", "-lead", "has space", "x" * 65, "ünï", "a/b", None, 7]:
        with pytest.raises(ValueError, match="invalid user name"):
            validate_user_name(bad)


def test_roles() -> None:
    assert ROLES == ("admin", "senior_reviewer", "reviewer", "auditor")
    assert validate_role(" Senior_Reviewer ") == "senior_reviewer"
    with pytest.raises(ValueError, match="expected one of: admin, senior_reviewer, reviewer"):
        validate_role("root")
    with pytest.raises(ValueError, match="unknown role"):
        validate_role(None)


def test_queues_are_deduplicated_in_order() -> None:
    assert validate_queues(["Urgent", "default", "urgent"]) == ("urgent", "default")
    assert validate_queues("default") == ("default",)
    with pytest.raises(ValueError, match="at least one queue"):
        validate_queues([])
    with pytest.raises(ValueError, match="invalid queue name"):
        validate_queues(["ok", "not ok"])
    with pytest.raises(ValueError, match="at most 64 queues"):
        validate_queues([f"q{i}" for i in range(65)])


def test_role_permissions() -> None:
    table = {
        role: (
            acc.may_administer(role),
            acc.may_read_audit(role),
            acc.may_review(role),
            acc.may_use_senior_queues(role),
            acc.sees_all_queues(role),
        )
        for role in ROLES
    }
    assert table == {
        "admin": (True, True, True, True, True),
        "senior_reviewer": (False, False, True, True, True),
        "reviewer": (False, False, True, False, False),
        "auditor": (False, True, False, False, False),
    }


def test_password_rules() -> None:
    assert check_password("a" * 11 + "b", name="bob") == "a" * 11 + "b"
    with pytest.raises(ValueError, match="is 11 characters; use at least 12"):
        check_password("x" * 11, name="bob")
    with pytest.raises(ValueError, match="must not be or contain the user name"):
        check_password("ReviewerOne1", name="reviewerone1")
    with pytest.raises(ValueError, match="must not be or contain the user name"):
        check_password("my-ALICE-password", name="alice")
    # A name under four characters is too common a substring to forbid.
    assert check_password("bobsleigh-team", name="bob") == "bobsleigh-team"
    with pytest.raises(ValueError, match="only spaces"):
        check_password(" " * 12, name="bob")
    with pytest.raises(ValueError, match="longer than 1024"):
        check_password("x" * 1025, name="bob")
    with pytest.raises(ValueError, match="must be a string"):
        check_password(b"bytes-password", name="bob")
    with pytest.raises(ValueError, match="not valid Unicode"):
        check_password("\ud800" * 12, name="bob")


def test_password_is_normalised_before_hashing() -> None:
    composed = "caf\u00e9-au-lait-42"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert check_password(decomposed, name="bob") == composed
    hasher = PasswordHasher(**FAST)
    stored = hasher.hash(decomposed)
    assert hasher.verify(stored, composed) and hasher.verify(stored, decomposed)


def test_argon2id_hash_verify_and_rehash() -> None:
    hasher = PasswordHasher(**FAST)
    stored = hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert "correct horse battery" not in stored
    assert hasher.hash("correct horse battery") != stored  # salted
    assert hasher.verify(stored, "correct horse battery")
    assert not hasher.verify(stored, "correct horse batterY")
    assert not hasher.verify(stored, None)  # type: ignore[arg-type]
    assert not hasher.verify("not-a-hash", "correct horse battery")
    assert not hasher.needs_rehash(stored)
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    assert stronger.needs_rehash(stored) and stronger.verify(stored, "correct horse battery")
    assert stronger.needs_rehash("garbage")


def test_unknown_user_costs_a_verification_with_the_same_parameters() -> None:
    calls: list[str] = []

    class Spy(PasswordHasher):
        def _check(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return super()._check(stored, password)

    hasher = Spy(time_cost=2, memory_cost=16, parallelism=1)
    assert hasher.verify(None, "anything at all") is False
    assert hasher.verify(None, "") is False
    assert len(calls) == 2 and calls[0].startswith("$argon2id$v=19$m=16,t=2,p=1$")


def test_default_hasher_uses_rfc_9106_low_memory_parameters() -> None:
    hasher = acc.default_hasher()
    assert hasher is acc.default_hasher()
    assert hasher.parameters == (3, 65_536, 4)


def test_tokens() -> None:
    tokens = {new_session_token() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) == 43 and well_formed_token(t) for t in tokens)
    token = tokens.pop()
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()
    for bad in [None, 5, "short", "x" * 200, "a" * 40 + "!!!", "ä" * 43]:
        assert not well_formed_token(bad)
    csrf = new_csrf_token()
    assert csrf_matches(csrf, csrf) and csrf != new_csrf_token()
    assert not csrf_matches(csrf, csrf[:-1] + ("A" if csrf[-1] != "A" else "B"))
    assert not csrf_matches(csrf, None) and not csrf_matches(csrf, "é" * 43)


def test_login_errors_say_the_same_thing() -> None:
    assert str(LoginFailed()) == LOGIN_FAILED_MESSAGE
    until = datetime(2025, 1, 1, 10, 45, tzinfo=UTC)
    throttled = LoginThrottled(until)
    assert isinstance(throttled, LoginFailed) and LoginLocked is LoginThrottled
    assert "10:45:00 UTC" in str(throttled) and "this address" in str(throttled)
    assert throttled.retry_after(until - timedelta(seconds=90.2)) == 91
    assert throttled.retry_after(until + timedelta(minutes=1)) == 1
