"""The console's key page grants a new feed key its feeds (issue 12, finding 7); SQLite and
PostgreSQL."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.web.conftest import Console


def test_admin_creates_a_feed_key_that_reads_only_the_feeds_ticked(console: Console) -> None:
    feeds = console.rt.feeds
    console.store.create_bank("bank-x")
    console.store.create_bank("bank-y")
    for bank, feed in (("bank-x", "for-x"), ("bank-y", "for-y")):
        feeds.create(feed, [bank], organisation="Org A")
        feeds.publish(feed)
    ada = console.login("ada")
    page = ada.get("/admin/keys").text
    assert 'name="feeds" value="for-x"' in page and 'name="feeds" value="for-y"' in page
    # Feeds only go with the feed scope, and only feeds that exist; neither makes a key.
    wrong = ada.post_form("/admin/keys", {"name": "px", "scopes": "match", "feeds": "for-x"})
    assert wrong.status_code == 400 and "feed" in wrong.text
    nope = ada.post_form("/admin/keys", {"name": "px", "scopes": "feed", "feeds": "nope"})
    assert nope.status_code == 400 and "no feed named" in nope.text
    assert "px" not in {k.name for k in console.store.list_api_keys()}

    r = ada.post_form("/admin/keys", {"name": "px", "scopes": "feed", "feeds": "for-x"})
    assert r.status_code == 200
    token = re.search(r'<p class="token mono" id="new-token">([^<]+)</p>', r.text).group(1)
    assert re.search(r'data-key="px">.*?feeds: for-x</span>', r.text, re.S)
    (grant,) = feeds.grants(key="px")
    assert (grant.feed, grant.granted_by) == ("for-x", "user:ada")
    (event,) = console.store.recent_audit(10, action="feed.grant")
    assert (event.actor, event.target, event.detail["key"]) == ("user:ada", "for-x", "px")

    with TestClient(console.app) as api:
        auth = {"Authorization": f"Bearer {token}"}
        assert api.get("/v1/feeds/for-x/entries", headers=auth).status_code == 200
        assert api.get("/v1/feeds/for-y/entries", headers=auth).status_code == 404
