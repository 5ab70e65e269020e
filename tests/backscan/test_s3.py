"""Back-scans of an object-store prefix against a real S3 API: moto's server on loopback, in a
process of its own (never a mock of boto3). The scan only reads: the bucket is unchanged after."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bastion.signals import SignalType, hash_file
from tests.backscan.conftest import bank_with, make_archive, rows, run_cli, summary
from tests.fixtures.stores import migrated_database

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in {**CREDS, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(os.environ)


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_creds())


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"],
    }


def _listing(s3: Any, bucket: str) -> list[tuple[str, str, int]]:
    objs = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [(o["Key"], o["ETag"], o["Size"]) for o in objs]


def test_an_s3_prefix_is_scanned_read_only_with_etags_and_matches(
    s3_endpoint: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    files = make_archive(tmp_path / "local", 8)
    s3 = _client(s3_endpoint)
    s3.create_bucket(Bucket="archive")
    for f in files:
        s3.upload_file(str(f), "archive", f"uploads/2024/{f.name}")
    s3.put_object(Bucket="archive", Key="other/not-in-prefix.jpg", Body=files[0].read_bytes())
    s3.put_object(Bucket="archive", Key="uploads/2024/folder/", Body=b"")  # a folder marker
    before = _listing(s3, "archive")
    with migrated_database("sqlite", tmp_path) as db:
        bank_with(db.open(), files[2])
        out = tmp_path / "out"
        proc = run_cli(
            "backscan",
            "s3://archive/uploads/",
            "--out",
            str(out),
            "--endpoint-url",
            s3_endpoint,
            "--shard-size",
            "3",
            db=db.url,
        )
    assert proc.returncode == 1, proc.stderr
    assert _listing(s3, "archive") == before  # nothing written, nothing deleted
    got = {r["uri"]: r for r in rows(out)}
    assert sorted(got) == sorted(f"s3://archive/uploads/2024/{f.name}" for f in files)
    etags = {k: e.strip('"') for k, e, _ in before}
    for f in files:
        r = got[f"s3://archive/uploads/2024/{f.name}"]
        assert r["version"] == "etag:" + etags[f"uploads/2024/{f.name}"]
        assert r["size"] == f.stat().st_size
        fs = hash_file(f)
        assert r["sha256"] == fs.get(SignalType.SHA256).value  # type: ignore[union-attr]
        pdq = fs.get(SignalType.PDQ)
        assert r["pdq"] == (pdq.value if pdq else None)
    assert got[f"s3://archive/uploads/2024/{files[2].name}"]["matched"] == 1
    assert "corrupt" in got["s3://archive/uploads/2024/corrupt.jpg"]["error"]
    assert summary(proc)["total"]["objects"] == len(files)


def test_a_manifest_of_s3_uris_with_a_missing_object_and_a_missing_bucket(
    s3_endpoint: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    files = make_archive(tmp_path / "local", 2, bad=False)
    s3 = _client(s3_endpoint)
    s3.create_bucket(Bucket="media")
    s3.upload_file(str(files[0]), "media", "a.jpg")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"uri": "s3://media/a.jpg", "content_id": "c1", "uploader_id": "u1"})
        + "\n"
        + json.dumps({"uri": "s3://media/gone.jpg", "content_id": "c2"})
        + "\n"
    )
    with migrated_database("sqlite", tmp_path) as db:
        out = tmp_path / "out"
        run_cli(
            "backscan", str(manifest), "--out", str(out), "--endpoint-url", s3_endpoint, db=db.url
        )
        got = {r["content_id"]: r for r in rows(out)}
        assert got["c1"]["uploader_id"] == "u1" and got["c1"]["pdq"]
        assert (
            got["c2"]["error"].startswith("cannot read object:")
            and "NoSuchKey" in got["c2"]["error"]
        )
        # A listing the store refuses is a usage error, not a traceback.
        proc = run_cli(
            "backscan",
            "s3://no-such-bucket/x",
            "--out",
            str(tmp_path / "out2"),
            "--endpoint-url",
            s3_endpoint,
            db=db.url,
            check=False,
        )
        assert proc.returncode == 2 and "cannot list s3://no-such-bucket/x" in " ".join(
            proc.stderr.split()
        )
