"""Outbox operations (issue 19, item 12): retrying several or all dead deliveries at once, each
audited, and the oldest-undelivered figure counting dead rows (they are undelivered too)."""

from __future__ import annotations

from bastion.actions.outbox import Outbox
from bastion.db import Store
from tests.fixtures.clock import Clock

from .test_outbox import LEASE, add, outbox  # noqa: F401  (the fixture)


def _kill(box: Outbox, n: int) -> list[int]:
    dead = []
    for item in box.claim_due("w", n, LEASE):
        box.mark_failed(item, "w", error="HTTP 500", permanent=True)
        dead.append(item.id)
    return dead


def test_oldest_undelivered_counts_dead_rows(outbox: Outbox, clock: Clock) -> None:  # noqa: F811
    add(outbox, 1)
    _kill(outbox, 1)
    clock.advance(300)
    add(outbox, 1, action="preserve")  # a fresh pending row
    clock.advance(60)
    stats = outbox.stats()
    assert stats.counts["dead"] == 1 and stats.counts["pending"] == 1
    assert stats.oldest_pending_age == 360  # the dead row, not the minute-old pending one


def test_retry_selected_and_all_dead_deliveries_each_audited(
    outbox: Outbox,  # noqa: F811
    store: Store,
) -> None:
    ids = add(outbox, 4)
    dead = _kill(outbox, 3)
    assert sorted(dead) == ids[:3]
    done = outbox.retry_dead([dead[0], dead[0], ids[3]], actor="user:ada")
    # Retried once; the pending row is skipped, not an error.
    assert [i.id for i in done] == [dead[0]] and done[0].state == "pending"
    assert [i.id for i in outbox.list(state="dead")] == sorted(dead[1:], reverse=True)
    done = outbox.retry_dead(None, actor="user:ada", remote_addr="192.0.2.9")
    assert sorted(i.id for i in done) == sorted(dead[1:])
    assert outbox.list(state="dead") == []
    retries = [e for e in store.iter_audit() if e.action == "outbox.retry"]
    assert sorted(int(e.target.split(":")[1]) for e in retries) == sorted(dead)
    assert {e.actor for e in retries} == {"user:ada"}
