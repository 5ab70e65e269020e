"""Local decisions against upstream changes, and who counts as a voucher: an entry a reviewer
disabled and the partner then withdrew keeps the reviewer's reason, stops vouching, and stays
disabled if the partner lists it again; one source cannot vouch twice in a group."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges.base import ExchangeConfig, Removal, Upsert, register
from bastion.exchanges.store import ExchangeStore
from bastion.store import InvalidInput
from tests.exchanges.scripted import SCRIPTS, Script, ScriptedExchange, Step, entry, md5


class IdentityConfig(ExchangeConfig):
    script: str = "default"
    identity: str = ""


@register
class IdentityExchange(ScriptedExchange):
    """A scripted exchange that says which source stands behind it."""

    kind = "scripted-identity"
    Config = IdentityConfig
    Credentials = None

    @classmethod
    def vouch_identity(cls, config: ExchangeConfig) -> str | None:
        return getattr(config, "identity", "") or None


@pytest.fixture
def xs(store: Store) -> ExchangeStore:
    return ExchangeStore(store, MasterKey.generate(), Settings())


@pytest.fixture
def scripts() -> Iterator[dict[str, Script]]:
    made: dict[str, Script] = {}
    yield made
    for name in made:
        SCRIPTS.pop(name, None)


def _script(scripts: dict[str, Script], name: str, *steps: Step) -> Script:
    SCRIPTS[name] = scripts[name] = Script(steps=list(steps))
    return scripts[name]


def _entry(store: Store, bank: str, value: str):  # type: ignore[no-untyped-def]
    (found,) = [e for e in store.iter_entries(banks=[bank], enabled_only=False) if e.value == value]
    return found


def test_a_local_disable_survives_withdrawal_and_relisting(
    xs: ExchangeStore, scripts: dict[str, Script]
) -> None:
    v = md5("local-1")
    s = _script(scripts, "local-a", Step(items=[Upsert("k1", (entry(v),))]))
    xs.add("local-a", "scripted", config={"script": "local-a"})
    xs.sync("local-a")
    store = xs.store
    store.disable_entry("local-a", _entry(store, "local-a", v).id, "not abusive (case 7)")
    s.steps.append(Step(items=[Removal("k1", "withdrawn")]))
    xs.sync("local-a")
    e = _entry(store, "local-a", v)
    assert not e.enabled
    assert e.disabled_reason.startswith("upstream+local: withdrawn")
    assert e.disabled_reason.endswith("| was: not abusive (case 7)")
    # Listed again upstream: an upstream-disabled entry would come back; this one stays off,
    # with the reviewer's reason again.
    s.steps.append(Step(items=[Upsert("k1", (entry(v),))]))
    xs.sync("local-a")
    e = _entry(store, "local-a", v)
    assert not e.enabled and e.disabled_reason == "not abusive (case 7)"


def test_a_locally_disabled_entry_withdrawn_upstream_stops_vouching(
    xs: ExchangeStore, scripts: dict[str, Script]
) -> None:
    v = md5("local-2")
    a = _script(scripts, "vouch-a", Step(items=[Upsert("a1", (entry(v),))]))
    _script(scripts, "vouch-b", Step(items=[Upsert("b1", (entry(v),))]))
    for name in ("vouch-a", "vouch-b"):
        xs.add(name, "scripted", config={"script": name}, vouch_group="g2", min_vouchers=2)
        xs.sync(name)
    store = xs.store
    assert _entry(store, "vouch-b", v).enabled  # two vouchers
    # a's copy is disabled locally: a still vouches (the partner still lists it).
    store.disable_entry("vouch-a", _entry(store, "vouch-a", v).id, "admin check")
    xs.update("vouch-b", min_vouchers=2)  # recount
    assert _entry(store, "vouch-b", v).enabled
    # Then a's partner withdraws it: a no longer vouches, so b's copy waits for a second one.
    a.steps.append(Step(items=[Removal("a1", "withdrawn")]))
    xs.sync("vouch-a")
    b = _entry(store, "vouch-b", v)
    assert not b.enabled and b.disabled_reason == "upstream: awaiting vouchers (1 of 2)"


def test_one_source_cannot_vouch_twice_in_a_group(
    xs: ExchangeStore, scripts: dict[str, Script]
) -> None:
    _script(scripts, "id-a")
    xs.add(
        "id-a",
        "scripted-identity",
        config={"script": "id-a", "identity": "org-1"},
        vouch_group="g3",
        min_vouchers=2,
    )
    with pytest.raises(InvalidInput, match="one source cannot vouch twice"):
        xs.add(
            "id-b",
            "scripted-identity",
            config={"script": "id-a", "identity": "org-1"},
            vouch_group="g3",
            min_vouchers=2,
        )
    assert [i.name for i in xs.list()] == ["id-a"]
    # Another source may join; one outside the group may share the identity.
    xs.add(
        "id-c",
        "scripted-identity",
        config={"script": "id-a", "identity": "org-2"},
        vouch_group="g3",
        min_vouchers=2,
    )
    xs.add("id-d", "scripted-identity", config={"script": "id-a", "identity": "org-1"})
    # Moving that one into the group, or turning a member into the same source, is refused too.
    with pytest.raises(InvalidInput, match="one source cannot vouch twice"):
        xs.update("id-d", vouch_group="g3")
    with pytest.raises(InvalidInput, match="one source cannot vouch twice"):
        xs.update("id-c", config={"script": "id-a", "identity": "org-1"})
    assert xs.get("id-d").vouch_group is None
    assert xs.get("id-c").config["identity"] == "org-2"
