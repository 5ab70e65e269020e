"""`bastion policy`: check's exit codes and line-numbered errors, show's summary, and test's
dry-run counts over scans stored in a real database (SQLite, and PostgreSQL where noted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.cli import policy as cli_policy
from bastion.cli.policy import replay
from bastion.db import Store
from bastion.index.matcher import Matcher
from bastion.policy import default_policy_text, parse_policy
from bastion.signals import hash_bytes
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()


def bastion(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def said(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture
def pg_db() -> Iterator[str]:
    with postgres_schema_url("t_policy") as url:
        yield url


@pytest.fixture
def default_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(default_policy_text())
    return path


BROKEN = """\
version: 1
rules:
  - name: exact
    when:
      signal_types: [md5, phash]
    verdict: block
    priority: urgent
"""


# -- check -------------------------------------------------------------------------------------


def test_check_accepts_a_valid_policy(default_file: Path) -> None:
    result = bastion("policy", "check", str(default_file))
    assert result.exit_code == 0
    assert result.stdout == f"{default_file}: valid policy, 9 rules\n"


def test_check_lists_every_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = bastion("policy", "check", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}: invalid policy (2 errors)",
        f"{path}:5: rule 'exact' when.signal_types value 'phash' is not one of: pdq, vpdq, "
        "md5, sha256, url, text, email, username, phone, ip",
        f"{path}:7: rule 'exact' priority 'urgent' is not one of: critical, high, normal, low",
    ]


def test_check_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = bastion("policy", "check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "cannot read" in said(result.stderr)


# -- show --------------------------------------------------------------------------------------


def test_show_lists_rules_in_order(default_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # a terminal wide enough not to wrap names
    result = bastion("policy", "show", str(default_file))
    assert result.exit_code == 0
    out = result.stdout
    names = ["csam-exact", "csam-confident", "csam-url", "repeat-uploader", "csam-possible"]
    positions = [out.index(n) for n in names]
    assert positions == sorted(positions)
    assert "(otherwise)" in out and "(no match)" in out
    assert "SLA: critical 1h, high 4h, normal 1d, low 3d" in out


def test_show_json(default_file: Path) -> None:
    result = bastion("policy", "show", str(default_file), "--format", "json")
    doc = json.loads(result.stdout)
    assert [r["name"] for r in doc["rules"]][:2] == ["csam-exact", "csam-confident"]
    assert doc["rules"][0]["view_required"] is False
    assert doc["review"]["escalation_queue"] == "senior"
    assert doc["digest"] == parse_policy(default_policy_text()).digest


def test_show_without_a_file_uses_the_setting_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    own = tmp_path / "own.yaml"
    own.write_text(BROKEN.replace("phash", "sha256").replace("urgent", "high"))
    monkeypatch.setenv("BASTION_POLICY_FILE", str(own))
    result = bastion("policy", "show", "--format", "json")
    assert [r["name"] for r in json.loads(result.stdout)["rules"]] == ["exact"]

    monkeypatch.setenv("BASTION_POLICY_FILE", str(tmp_path / "not-yet.yaml"))
    result = bastion("policy", "show", "--format", "json")
    assert json.loads(result.stdout)["rules"][0]["name"] == "csam-exact"
    assert "showing the default policy" in said(result.stderr)
    assert not (tmp_path / "not-yet.yaml").exists()  # show never writes


def test_show_of_an_invalid_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = bastion("policy", "show", str(path))
    assert result.exit_code == 1
    assert f"{path}:7: rule 'exact' priority 'urgent'" in result.stderr


# -- test: realistic dicts ---------------------------------------------------------------------


def _match(bank: str, entry: int, stype: str, distance: int, labels: list[str]) -> dict[str, Any]:
    return {
        "bank": bank,
        "entry": entry,
        "signal_type": stype,
        "distance": distance,
        "external_id": f"{bank}-{entry}",
        "labels": labels,
    }


#: (matches, context) of each scan, oldest first, as /v1/scan records them (verdict "review").
SCANS: list[tuple[list[dict[str, Any]], dict[str, Any]]] = [
    ([_match("hotline", 1, "md5", 0, [])], {"uploader_id": "u1"}),
    ([_match("hotline", 1, "md5", 0, []), _match("hotline", 2, "pdq", 0, [])], {}),
    ([_match("hotline", 3, "sha256", 0, [])], {"uploader_id": "u2", "age_band": "adult"}),
    ([_match("hotline", 2, "pdq", 8, [])], {"uploader_id": "u3"}),
    ([_match("hotline", 4, "vpdq", 12, [])], {}),
    ([_match("hotline", 2, "pdq", 25, [])], {"uploader_id": "u4"}),
    ([_match("stopncii", 10, "pdq", 3, [])], {"uploader_id": "u5"}),
    ([_match("stopncii", 11, "pdq", 30, [])], {}),
    ([_match("own", 20, "pdq", 0, [])], {"uploader_id": "u6"}),
    # An industry classification on the entry makes a match in an unlabelled bank CSAM.
    ([_match("own", 21, "pdq", 4, ["A2"])], {"uploader_id": "u7"}),
]


def seed(url: str) -> None:
    with Store.open(url) as store:
        store.create_bank("hotline", labels=["csam"], source="hotline feed")
        store.create_bank("stopncii", labels=["ncii"])
        store.create_bank("own")
        for i, (matches, context) in enumerate(SCANS):
            store.record_scan(
                actor="key:platform",
                content_kind="image",
                context={"content_id": f"post-{i}", **context},
                signals=[{"type": "md5", "value": f"{i:032x}"}],
                matches=matches,
                verdict="review",
            )


def rules_table(result: Any) -> dict[str, tuple[str, int, int]]:
    doc = json.loads(result.stdout)
    return {r["rule"]: (r["verdict"], r["caught"], r["changed"]) for r in doc["rules"]}


def test_policy_test_counts_what_each_rule_would_catch(db: str, default_file: Path) -> None:
    seed(db)
    result = bastion("--db", db, "policy", "test", str(default_file), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["scans"], doc["changed"]) == (10, 6)
    assert rules_table(result) == {
        "csam-exact": ("block", 3, 3),
        "csam-confident": ("block", 3, 3),
        "csam-url": ("block", 0, 0),
        "keyword-urgent": ("review", 0, 0),
        "keyword": ("review", 0, 0),
        "identity-lead": ("review", 0, 0),
        "repeat-uploader": ("block", 0, 0),
        "csam-possible": ("review", 1, 0),
        "ncii": ("review", 2, 0),
        "(otherwise)": ("review", 1, 0),
    }
    assert doc["verdicts"] == [
        {"verdict": "allow", "at_scan_time": 0, "with_policy": 0, "difference": 0},
        {"verdict": "review", "at_scan_time": 10, "with_policy": 4, "difference": -6},
        {"verdict": "block", "at_scan_time": 0, "with_policy": 6, "difference": 6},
    ]
    assert doc["transitions"] == [{"from": "review", "to": "block", "count": 6}]


@pytest.mark.postgres
def test_policy_test_on_postgresql(pg_db: str, default_file: Path) -> None:
    seed(pg_db)
    result = bastion("policy", "test", str(default_file), "--db", pg_db, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] == 6
    assert rules_table(result)["ncii"] == ("review", 2, 0)


def test_policy_test_table(db: str, default_file: Path) -> None:
    seed(db)
    result = bastion("policy", "test", str(default_file), "--db", db)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "10 scans replayed; 6 would get a different verdict (review → block: 6)" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert [c.strip() for c in rows["csam-exact"].split("│")[2:6]] == [
        "block",
        "critical",
        "3",
        "3",
    ]
    assert [c.strip() for c in rows["ncii"].split("│")[2:6]] == ["review", "high", "2", "0"]
    assert [c.strip() for c in rows["review"].split("│")[2:5]] == ["10", "4", "-6"]
    assert "uploader history is not replayed" in said(result.stderr)


def test_policy_test_limit_takes_the_newest_scans(
    db: str, default_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db)
    monkeypatch.setattr(cli_policy, "_PAGE", 3)  # several pages, one of them partial
    result = bastion("--db", db, "policy", "test", str(default_file), "-n", "5", "-f", "json")
    doc = json.loads(result.stdout)
    assert doc["scans"] == 5
    # The five newest: possible (pdq 25), ncii twice, otherwise, confident (A2 label).
    caught = {rule: n for rule, (_, n, _) in rules_table(result).items() if n}
    assert caught == {"csam-confident": 1, "csam-possible": 1, "ncii": 2, "(otherwise)": 1}
    result = bastion("--db", db, "policy", "test", str(default_file), "-f", "json")
    assert json.loads(result.stdout)["scans"] == 10


def test_policy_test_with_a_stricter_edit(db: str, tmp_path: Path) -> None:
    """The question an operator asks before an edit: what would blocking all NCII change?"""
    seed(db)
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        default_policy_text().replace(
            "      labels_any: [ncii]\n    verdict: review",
            "      labels_any: [ncii]\n    verdict: block",
        )
    )
    result = bastion("--db", db, "policy", "test", str(edited), "--format", "json")
    doc = json.loads(result.stdout)
    assert rules_table(result)["ncii"] == ("block", 2, 2)
    assert doc["changed"] == 8


def test_policy_test_of_an_invalid_policy_exits_1(db: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = bastion("--db", db, "policy", "test", str(path))
    assert result.exit_code == 1
    assert f"{path}:5:" in result.stderr


def test_policy_test_with_an_unreachable_database_is_a_usage_error(default_file: Path) -> None:
    result = bastion("policy", "test", str(default_file), "--db", "nosuchdb://x")
    assert result.exit_code == 2
    assert "cannot open the store" in said(result.stderr)


def test_replay_asks_uploader_history_once_per_uploader(db: str, default_file: Path) -> None:
    seed(db)
    asked: list[str] = []

    def confirmed(uploader: str) -> int:
        asked.append(uploader)
        return 2 if uploader in ("u4", "u6") else 0

    with Store.open(db) as store:
        # Same uploader twice more: still one question.
        for _ in range(2):
            store.record_scan(
                actor="key:platform",
                content_kind="image",
                context={"uploader_id": "u6"},
                signals=[],
                matches=[_match("own", 20, "pdq", 0, [])],
                verdict="review",
            )
        result = replay(store, parse_policy(default_policy_text()), confirmed=confirmed)
    assert sorted(asked) == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    # u4's weak CSAM match and u6's three matches in an unlabelled bank are now blocked.
    assert result.caught["repeat-uploader"] == 4
    assert result.caught["csam-possible"] == 0 and result.caught["(otherwise)"] == 0
    assert result.scans == 12 and result.changed == 10


# -- test: real hashes -------------------------------------------------------------------------

EXACT_OR_NEAR = """\
version: 1
rules:
  - name: exact
    when: {labels_any: [csam], signal_types: [md5, sha256]}
    verdict: block
    view_required: false
  - name: near
    when: {labels_any: [csam], signal_types: [pdq], max_distance: 10}
    verdict: block
otherwise: {verdict: review, priority: high}
"""


def test_policy_test_over_scans_of_real_images(db: str, tmp_path: Path, testdata: Path) -> None:
    """Bank the benign bridge photo, match its 12 published edits as /v1/scan would, store the
    scans, and replay them. Their PDQ distances are 0-8 for seven edits and 12-16 for four."""
    photos = testdata / "images" / "bridge-mods"
    with Store.open(db) as store:
        store.create_bank("hotline", labels=["csam"])
        original = hash_bytes((photos / "aaa-orig.jpg").read_bytes(), name="aaa-orig.jpg")
        store.add_entries(
            "hotline", [NewEntry(s.type, s.value, quality=s.quality) for s in original.signals]
        )
        matcher = Matcher.from_entries(store.iter_index_entries())
        for path in sorted(photos.glob("*.jpg")):
            fs = hash_bytes(path.read_bytes(), name=path.name)
            matches = matcher.match(fs.signals, threshold=31)
            assert matches, path.name
            store.record_scan(
                actor="key:platform",
                content_kind=fs.kind,
                context={"content_id": path.name},
                signals=[{"type": str(s.type), "value": s.value} for s in fs.signals],
                matches=[m.as_dict() for m in matches],
                verdict="review",
            )
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXACT_OR_NEAR)
    result = bastion("--db", db, "policy", "test", str(policy), "--format", "json")
    assert rules_table(result) == {
        "exact": ("block", 1, 1),
        "near": ("block", 7, 7),
        "(otherwise)": ("review", 4, 0),
    }
