"""Where a back-scan's objects come from, and how one object is read and hashed.

A source is listed once, in a stable order, into plan rows (one dict per object: ``uri`` and what
the listing knew of it). Reading and hashing happen later, in a worker process or a Ray task, with
the same code as ``bastion scan`` (:func:`bastion.signals.hash_file` for local files,
:func:`bastion.signals.hash_bytes` for object-store bytes). Listing problems (an unreadable
folder, a manifest line without a uri) become plan rows with an ``error``, never a failed run.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.scan import Unreadable, iter_files
from bastion.signals import FileSignals, HashOptions, hash_bytes, hash_file

#: Manifest columns besides ``uri`` that are carried into every row and into review.
CONTEXT_COLUMNS = ("content_id", "uploader_id", "created_at", "age_band")
#: Plan row columns, in order.
PLAN_COLUMNS = ("uri", "size", "version", *CONTEXT_COLUMNS, "error")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
#: Objects larger than this are not downloaded for hashing (a row with an error says so).
DEFAULT_MAX_OBJECT_BYTES = 4 * 1024**3


class SourceError(ValueError):
    """The source as a whole cannot be listed (a missing folder, an unreadable manifest)."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise SourceError(f"no bucket in {uri!r}")
    return bucket, key


_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None = None) -> Any:
    """One boto3 S3 client per process and endpoint, from the standard credential chain
    (environment, shared files, instance or pod role). ``endpoint_url`` points it at an
    S3-compatible store; boto3 also reads ``AWS_ENDPOINT_URL_S3`` itself."""
    with _clients_lock:
        client = _clients.get(endpoint_url)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 5, "mode": "standard"})
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url or None, config=config
            )
            _clients[endpoint_url] = client
        return client


def _row(uri: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(PLAN_COLUMNS)
    row["uri"] = uri
    row.update(kw)
    return row


def list_source(source: str, *, endpoint_url: str | None = None) -> Iterator[dict[str, Any]]:
    """Plan rows for every object of ``source``: a folder, a manifest file or ``s3://b/prefix``."""
    if is_s3(source):
        yield from _list_s3(source, endpoint_url)
        return
    path = Path(source)
    if path.is_dir():
        yield from _list_folder(path)
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _list_manifest(path)
    elif path.exists():
        raise SourceError(
            f"{source}: not a folder, an s3:// prefix or a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    else:
        raise SourceError(f"{source}: no such folder or manifest")


def _list_folder(root: Path) -> Iterator[dict[str, Any]]:
    for item in iter_files([root.resolve()]):
        if isinstance(item, Unreadable):
            yield _row(str(item.path), error=item.message)
            continue
        try:
            st = item.stat()
        except OSError as exc:
            yield _row(str(item), error=f"cannot read file: {exc.strerror}")
            continue
        yield _row(str(item), size=st.st_size, version=_mtime(st.st_mtime))


def _mtime(seconds: float) -> str:
    return "mtime:" + datetime.fromtimestamp(seconds, UTC).isoformat()


def _list_s3(source: str, endpoint_url: str | None) -> Iterator[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(source)
    client = s3_client(endpoint_url)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:  # keys come back in UTF-8 binary order: a stable plan
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/") and obj.get("Size", 0) == 0:
                    continue  # a "folder" marker, not an object
                etag = str(obj.get("ETag", "")).strip('"')
                yield _row(f"s3://{bucket}/{key}", size=int(obj["Size"]), version=f"etag:{etag}")
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot list {source}: {exc}") from exc


def _list_manifest(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    base = path.resolve().parent
    if suffix == ".parquet":
        records: Iterator[tuple[int, dict[str, Any] | str]] = _parquet_records(path)
    elif suffix == ".csv":
        records = _csv_records(path)
    else:
        records = _jsonl_records(path)
    for line, rec in records:
        where = f"{path.name}:{line}"
        if isinstance(rec, str):
            yield _row(where, error=rec)
            continue
        uri = rec.get("uri")
        if not isinstance(uri, str) or not uri.strip():
            yield _row(where, error="manifest row has no uri")
            continue
        uri = uri.strip()
        if not is_s3(uri):
            local = Path(uri.removeprefix("file://"))
            uri = str(local if local.is_absolute() else base / local)
        context = {}
        for key in CONTEXT_COLUMNS:
            value = rec.get(key)
            if value is not None and value != "":
                context[key] = str(value)[:255]
        yield _row(uri, **context)


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f), start=2)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    yield i, f"manifest line is not JSON: {exc}"
                    continue
                yield i, rec if isinstance(rec, dict) else "manifest line is not a JSON object"
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc


def _parquet_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        if "uri" not in pf.schema_arrow.names:
            raise SourceError(f"manifest {path} has no 'uri' column")
        wanted = [c for c in ("uri", *CONTEXT_COLUMNS) if c in pf.schema_arrow.names]
        i = 0
        for batch in pf.iter_batches(columns=wanted, batch_size=65_536):
            for rec in batch.to_pylist():
                i += 1
                yield i, rec
    except OSError as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc


# -- reading one object (runs in a worker) -----------------------------------------------------
@dataclass(frozen=True)
class HashJob:
    """How a worker hashes: the same knobs as ``bastion scan``, plus object-store access."""

    dihedral: bool = False
    hash_options: HashOptions | None = None
    endpoint_url: str | None = None
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES


def hash_object(obj: dict[str, Any], job: HashJob) -> tuple[FileSignals, str | None]:
    """Hash one plan row's object: its signals (or why not) and the version actually read
    (ETag or mtime). Never raises for a bad object."""
    uri = str(obj["uri"])
    if obj.get("error"):
        return FileSignals(uri, "other", 0, [], error=str(obj["error"])), obj.get("version")
    if is_s3(uri):
        return _hash_s3(uri, job)
    try:
        st = os.stat(uri)
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror
        return FileSignals(uri, "other", 0, [], error=f"cannot read file: {reason}"), None
    if not Path(uri).is_file():
        return FileSignals(uri, "other", 0, [], error="not a regular file"), None
    fs = hash_file(uri, dihedral=job.dihedral, options=job.hash_options)
    return fs, _mtime(st.st_mtime)


def _hash_s3(uri: str, job: HashJob) -> tuple[FileSignals, str | None]:
    bucket, key = split_s3(uri)
    client = s3_client(job.endpoint_url)
    try:
        resp = client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        return FileSignals(uri, "other", 0, [], error=f"cannot read object: {exc}"), None
    version = "etag:" + str(resp.get("ETag", "")).strip('"')
    size = int(resp.get("ContentLength") or 0)
    body = resp["Body"]
    try:
        if size > job.max_object_bytes:
            return (
                FileSignals(
                    uri,
                    "other",
                    size,
                    [],
                    error=f"object too large: {size} bytes > limit {job.max_object_bytes} bytes",
                ),
                version,
            )
        data = body.read()
    except Exception as exc:
        return FileSignals(uri, "other", size, [], error=f"cannot read object: {exc}"), version
    finally:
        body.close()
    fs = hash_bytes(data, name=uri, dihedral=job.dihedral, options=job.hash_options)
    return fs, version
