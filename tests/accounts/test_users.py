"""Users in the store: create, read, change, disable; every change audited in its transaction;
bad input refused with nothing stored."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bastion.accounts.store import AccountStore, UserExists, UserNotFound, users_t
from bastion.db import Store
from bastion.store import InvalidInput
from tests.fixtures.clock import Clock

from .conftest import PASSWORD, START


def _audit(store: Store) -> list[tuple[str, str, str, dict[str, object]]]:
    return [(e.actor, e.action, e.target, e.detail) for e in store.iter_audit()]


def test_create_and_read_back(accounts: AccountStore, store: Store) -> None:
    user = accounts.create_user(
        "Rev.One", "reviewer", PASSWORD, ["urgent", "default"], actor="cli:alice"
    )
    assert (user.name, user.role, user.queues, user.disabled) == (
        "rev.one",
        "reviewer",
        ("urgent", "default"),
        False,
    )
    assert user.created_at == START and user.last_login_at is None
    assert user.actor == "user:rev.one"
    assert accounts.get_user("REV.ONE") == user
    admin = accounts.create_user("boss", "admin", PASSWORD, actor="cli:alice")
    assert admin.queues == ("default",)
    assert [u.name for u in accounts.list_users()] == ["boss", "rev.one"]
    with store.engine.connect() as conn:
        stored = conn.execute(select(users_t.c.password_hash)).scalars().all()
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in stored)
    queues = ["urgent", "default"]
    assert _audit(store) == [
        ("cli:alice", "user.create", "rev.one", {"role": "reviewer", "queues": queues}),
        ("cli:alice", "user.create", "boss", {"role": "admin", "queues": ["default"]}),
    ]
    everything = json.dumps([e.detail for e in store.iter_audit()])
    assert PASSWORD not in everything and "argon2" not in everything
    assert store.verify_audit_chain() is None


def test_duplicates_are_refused_whatever_the_case(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("dana", "auditor", PASSWORD, actor="cli:alice")
    with pytest.raises(UserExists, match="a user named 'dana' already exists"):
        accounts.create_user("DANA", "admin", PASSWORD + "x", actor="cli:alice")
    assert [(u.name, u.role) for u in accounts.list_users()] == [("dana", "auditor")]
    assert len(store.iter_audit()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no spaces", "reviewer", PASSWORD), "invalid user name"),
        (("erin", "superuser", PASSWORD), "unknown role 'superuser'"),
        (("erin", "reviewer", "elevenchars"), "use at least 12"),
        (("erin12345678", "reviewer", "erin12345678"), "must not be or contain the user name"),
        (("erin", "reviewer", PASSWORD, ["ok", "not ok"]), "invalid queue name"),
        (("erin", "reviewer", PASSWORD, []), "at least one queue"),
    ],
)
def test_bad_input_stores_nothing(
    accounts: AccountStore, store: Store, args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        accounts.create_user(*args, actor="cli:alice")  # type: ignore[arg-type]
    assert accounts.list_users() == [] and store.iter_audit() == []


def test_changes_are_audited(accounts: AccountStore, store: Store, clock: Clock) -> None:
    accounts.create_user("boss", "admin", PASSWORD, actor="cli:alice")
    accounts.create_user("fay", "reviewer", PASSWORD, actor="cli:alice")
    clock.advance(minutes=5)
    assert accounts.set_role("fay", "senior_reviewer", actor="user:boss").role == "senior_reviewer"
    fay = accounts.set_queues("fay", ["Urgent", "default"], actor="user:boss")
    assert fay.queues == ("urgent", "default")
    accounts.set_password("fay", "a brand new passphrase", actor="user:boss", remote_addr="::1")
    assert accounts.set_disabled("fay", True, actor="user:boss").disabled
    assert not accounts.set_disabled("fay", False, actor="user:boss").disabled
    events = _audit(store)[2:]
    assert events == [
        ("user:boss", "user.role", "fay", {"from": "reviewer", "to": "senior_reviewer"}),
        ("user:boss", "user.queues", "fay", {"from": ["default"], "to": ["urgent", "default"]}),
        ("user:boss", "user.password", "fay", {"sessions_ended": 0}),
        ("user:boss", "user.disable", "fay", {"already": False, "sessions_ended": 0}),
        ("user:boss", "user.enable", "fay", {"already": False}),
    ]
    assert store.iter_audit()[4].remote_addr == "::1"
    assert accounts.authenticate("fay", "a brand new passphrase").name == "fay"
    assert "a brand new passphrase" not in json.dumps([e.detail for e in store.iter_audit()])


def test_password_change_checks_the_rules(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("gilbert", "reviewer", PASSWORD, actor="cli:alice")
    with pytest.raises(InvalidInput, match="use at least 12"):
        accounts.set_password("gilbert", "short", actor="cli:alice")
    with pytest.raises(InvalidInput, match="contain the user name"):
        accounts.set_password("gilbert", "I-am-GILBERT-2025", actor="cli:alice")
    assert accounts.authenticate("gilbert", PASSWORD).name == "gilbert"
    assert [e.action for e in store.iter_audit()] == ["user.create", "login.success"]


def test_unknown_users(accounts: AccountStore, store: Store) -> None:
    for call in [
        lambda: accounts.get_user("nobody"),
        lambda: accounts.get_user("not a name"),
        lambda: accounts.set_role("nobody", "admin", actor="cli:a"),
        lambda: accounts.set_queues("nobody", ["default"], actor="cli:a"),
        lambda: accounts.set_password("nobody", PASSWORD, actor="cli:a"),
        lambda: accounts.set_disabled("nobody", True, actor="cli:a"),
        lambda: accounts.end_user_sessions("nobody", actor="cli:a"),
        lambda: accounts.record_exposure("nobody"),
        lambda: accounts.exposure_today("nobody"),
    ]:
        with pytest.raises(UserNotFound, match="no user named"):
            call()
    assert store.iter_audit() == []


def test_the_last_active_admin_stays(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("root1", "admin", PASSWORD, actor="cli:a")
    with pytest.raises(InvalidInput, match="'root1': it is the last active admin"):
        accounts.set_role("root1", "reviewer", actor="cli:a")
    with pytest.raises(InvalidInput, match="last active admin"):
        accounts.set_disabled("root1", True, actor="cli:a")
    accounts.create_user("root2", "admin", PASSWORD, actor="cli:a")
    accounts.set_disabled("root2", True, actor="cli:a")
    with pytest.raises(InvalidInput, match="last active admin"):  # a disabled admin is no help
        accounts.set_role("root1", "auditor", actor="cli:a")
    accounts.set_disabled("root2", False, actor="cli:a")
    assert accounts.set_role("root1", "auditor", actor="cli:a").role == "auditor"
    assert [(u.name, u.role) for u in accounts.list_users()] == [
        ("root1", "auditor"),
        ("root2", "admin"),
    ]
    assert [e.action for e in store.iter_audit()][-1] == "user.role"


def test_disabled_flag_must_be_a_bool(accounts: AccountStore) -> None:
    accounts.create_user("hal", "reviewer", PASSWORD, actor="cli:a")
    with pytest.raises(InvalidInput, match="True or False"):
        accounts.set_disabled("hal", "yes", actor="cli:a")  # type: ignore[arg-type]
    assert not accounts.get_user("hal").disabled
