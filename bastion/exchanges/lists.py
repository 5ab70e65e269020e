"""List exchanges (kind ``list``): keep a bank equal to a hash list file or URL.

A list is a full snapshot every time: each sync reads it from the top as pages of ``page_size``
records marked ``snapshot=<id>``, and the last page says ``snapshot_complete``, so whatever left
the list is disabled or removed locally. Everything streams: a local file is read line by line, a
URL is downloaded (SSRF-checked, see :func:`bastion.fetch.open_stream`) into an anonymous
temporary file while its SHA-256 is computed, then read line by line; nothing is held whole in
memory. The checkpoint keeps the snapshot id, the list's fingerprint and the line reached, so a
sync interrupted midway resumes at that line of the same list, and an unchanged list (same ETag,
Last-Modified, SHA-256, or size and mtime for a file) makes the sync a no-op. See
docs/exchanges-lists.md.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from bastion.banks.formats import (
    IWF,
    ParseError,
    canonical_hex_entry,
    detect_list_format,
    iter_lines,
    parse,
)
from bastion.banks.model import MAX_TEXT, NewEntry, normalize_entry, normalize_labels
from bastion.exchanges.base import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    Item,
    OnDelete,
    Page,
    PermanentError,
    Poisoned,
    TransientError,
    Upsert,
    register,
)
from bastion.signals.base import SignalType

#: Bytes of a malformed line kept with its error.
_RAW_EXCERPT = 500
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "pytx",
    ".iwf": IWF,
}
#: FetchError codes that no retry can fix: the configuration (or the list's size) must change.
_PERMANENT_FETCH = {"bad-url", "blocked-address", "blocked-port", "too-large"}


class ListConfig(ExchangeConfig):
    """Where the list is and what its entries are."""

    #: A local file path or an http(s) URL.
    source: str
    #: csv, jsonl, pytx, iwf, or auto (the first meaningful line, else the file extension).
    format: Literal["auto", "csv", "jsonl", "pytx", "iwf"] = "auto"
    #: Labels for entries whose line gives none (an IWF-style list always gives its own).
    labels: tuple[str, ...] = ()
    #: Provenance for entries whose line gives none; list_name defaults to the file name.
    list_name: str = ""
    organisation: str = ""
    #: Records (lines) per page, i.e. per transaction.
    page_size: int = Field(default=5000, ge=1, le=100_000)
    #: Largest download accepted, and the deadline of the whole download, for URL sources.
    max_bytes: int = Field(default=4 * 2**30, ge=1)
    timeout: float = Field(default=3600.0, gt=0, le=7 * 86400)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        value = value.strip()
        if not value or "\x00" in value or len(value) > 4096:
            raise ValueError("source must be a file path or an http(s) URL")
        scheme = urlsplit(value).scheme.lower() if "://" in value else ""
        if scheme and scheme not in ("http", "https"):
            raise ValueError(f"source URL scheme {scheme!r} is not http or https")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_labels(list(value)))

    @field_validator("list_name", "organisation")
    @classmethod
    def _text(cls, value: str) -> str:
        value = value.strip()
        if len(value) > MAX_TEXT or "\x00" in value:
            raise ValueError(f"must be text of at most {MAX_TEXT} characters")
        return value

    @property
    def is_url(self) -> bool:
        return self.source.lower().startswith(("http://", "https://"))


@register
class ListExchange(Exchange):
    """A hash list file or URL in a bank file format (csv, jsonl, pytx) or IWF-style."""

    kind = "list"
    Config = ListConfig
    on_delete = OnDelete.DISABLE
    default_interval = 3600.0

    config: ListConfig

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cp = checkpoint if checkpoint and checkpoint.get("source") == self.config.source else None
        if self.config.is_url:
            yield from self._fetch_url(cp)
        else:
            yield from self._fetch_file(cp)

    # -- sources -------------------------------------------------------------------------------

    def _fetch_file(self, cp: Checkpoint | None) -> Iterator[Page]:
        path = Path(self.config.source).expanduser()
        _check_allowed_path(path)
        try:
            st = path.stat()
            if not path.is_file():
                raise PermanentError(f"list source {path.name!r} is not a regular file")
            fh = path.open("rb")
        except FileNotFoundError:
            raise TransientError(f"list file {path.name!r} does not exist (yet)") from None
        except PermissionError:
            raise PermanentError(f"list file {path.name!r} is not readable") from None
        except OSError as exc:
            raise TransientError(f"cannot read list file {path.name!r}: {exc.strerror}") from None
        fingerprint = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        with fh:
            if cp and cp.get("complete") and cp.get("fingerprint") == fingerprint:
                return  # unchanged since the last complete sync
            yield from self._pages(fh, st.st_size, fingerprint, cp, path.name)

    def _fetch_url(self, cp: Checkpoint | None) -> Iterator[Page]:
        from bastion.fetch import FetchError, FetchPolicy, open_stream

        base = self.context.fetch_policy or FetchPolicy()
        policy = replace(base, max_bytes=self.config.max_bytes, timeout=self.config.timeout)
        prior = (cp or {}).get("fingerprint") or {}
        conditional = bool(cp and cp.get("complete"))
        spool = tempfile.TemporaryFile(prefix="bastion-list-")  # noqa: SIM115 (closed below)
        try:
            digest = hashlib.sha256()
            size = 0
            try:
                with open_stream(
                    self.config.source,
                    policy,
                    if_none_match=prior.get("etag") if conditional else None,
                    if_modified_since=prior.get("last_modified") if conditional else None,
                    accept="text/csv, application/x-ndjson, application/json, text/plain, */*",
                    user_agent=self.context.user_agent,
                ) as resp:
                    if resp.not_modified:
                        return
                    for chunk in resp.iter_bytes():
                        digest.update(chunk)
                        spool.write(chunk)
                        size += len(chunk)
                    etag, modified = resp.etag, resp.last_modified
            except FetchError as exc:
                raise _fetch_error(exc) from None
            except OSError as exc:  # the temporary file: disk full
                raise TransientError(f"cannot spool the list: {exc.strerror}") from None
            fingerprint = {"etag": etag, "last_modified": modified, "sha256": digest.hexdigest()}
            if conditional and prior.get("sha256") == fingerprint["sha256"]:
                if prior != fingerprint:  # same bytes, new validators: remember them, no changes
                    assert cp is not None
                    yield Page(items=(), checkpoint={**cp, "fingerprint": fingerprint})
                return
            spool.seek(0)
            name = PurePosixPath(urlsplit(self.config.source).path).name
            yield from self._pages(spool, size, fingerprint, cp, name)
        finally:
            spool.close()

    # -- paging --------------------------------------------------------------------------------

    def _pages(
        self,
        fh: IO[bytes],
        size: int,
        fingerprint: dict[str, Any],
        cp: Checkpoint | None,
        name: str,
    ) -> Iterator[Page]:
        """Pages of the list in ``fh`` (seekable, at its start), resuming ``cp`` when it is an
        unfinished snapshot of the same list."""
        cfg = self.config
        resume = bool(
            cp
            and not cp.get("complete")
            and cp.get("snapshot")
            and cp["fingerprint"] == fingerprint
        )
        if resume:
            assert cp is not None
            snapshot, start, records = str(cp["snapshot"]), int(cp["line"]), int(cp["records"])
            fmt, header = str(cp["format"]), bool(cp.get("header"))
            skipped: Counter[str] = Counter(cp.get("skipped") or {})
        else:
            snapshot, start, records, skipped = uuid.uuid4().hex, 0, 0, Counter()
            fmt, header = self._format(fh, name)
        finisher = _Finisher(cfg, cfg.list_name or name[:MAX_TEXT])
        reader = _LineReader(fh, skip_until=start, keep_header=header)

        def checkpoint(line: int, complete: bool = False) -> Checkpoint:
            return {
                "source": cfg.source,
                "fingerprint": fingerprint,
                "snapshot": None if complete else snapshot,
                "line": 0 if complete else line,
                "records": records,
                "format": fmt,
                "header": header,
                "complete": complete,
                "skipped": dict(skipped),
            }

        items: list[Item] = []
        group_key: str | None = None
        group: dict[tuple[str, str, str], NewEntry] = {}
        try:
            # The reader is a binary stream for parse (it reads lines only).
            for item in parse(cast(IO[bytes], reader), fmt, skipped=skipped):
                if isinstance(item, ParseError):
                    items.append(Poisoned(str(item), item.key, reader.excerpt()))
                    records += 1
                    if len(items) >= cfg.page_size:  # a run of bad lines must not grow a page
                        if group_key is not None:
                            items.append(Upsert(group_key, tuple(group.values())))
                            records += 1
                            group_key, group = None, {}
                        yield self._page(items, checkpoint(item.line), snapshot, reader, size)
                        items = []
                    continue
                entry = finisher.finish(item)
                key = _key(entry)
                if key != group_key:
                    if group_key is not None:
                        items.append(Upsert(group_key, tuple(group.values())))
                        records += 1
                        if len(items) >= cfg.page_size:
                            # Every line before this entry's is in the page.
                            line = reader.lines - 1
                            yield self._page(items, checkpoint(line), snapshot, reader, size)
                            items = []
                    group_key, group = key, {}
                group.setdefault(
                    (entry.signal_type.value, entry.value, entry.url_match or ""), entry
                )
        except OSError as exc:
            raise TransientError(f"reading the list failed: {exc.strerror or exc}") from None
        if group_key is not None:
            items.append(Upsert(group_key, tuple(group.values())))
            records += 1
        page = self._page(items, checkpoint(reader.lines, complete=True), snapshot, reader, size)
        yield replace(page, snapshot_complete=True)

    @staticmethod
    def _page(
        items: list[Item], cp: Checkpoint, snapshot: str, reader: _LineReader, size: int
    ) -> Page:
        return Page(
            items=tuple(items), checkpoint=cp, snapshot=snapshot, progress=(reader.pos, size)
        )

    def _format(self, fh: IO[bytes], name: str) -> tuple[str, bool]:
        """The list's format, and whether its first meaningful line is a header (kept when
        resuming). Reads ahead at most a thousand lines, then rewinds."""
        first: str | None = None
        for count, (_, text) in enumerate(iter_lines(fh)):
            if isinstance(text, str) and text.strip() and not text.lstrip().startswith("#"):
                first = text
                break
            if count > 1000:
                break
        fh.seek(0)
        fmt: str | None = None if self.config.format == "auto" else self.config.format
        if fmt is None and first is not None:
            try:
                fmt = detect_list_format(first)
            except ValueError:
                fmt = None
        if fmt is None:
            fmt = _EXTENSIONS.get(PurePosixPath(name).suffix.lower())
        if fmt is None:
            raise PermanentError(
                "cannot tell the list's format from its first line or its name: "
                "set format to csv, jsonl, pytx or iwf"
            )
        header = fmt == "csv" or (
            fmt == IWF and first is not None and not first.lstrip().startswith("{")
        )
        return fmt, header


# ---------------------------------------------------------------------------------------------
# helpers


class _LineReader:
    """A binary stream that counts lines and bytes for checkpoints, keeps an excerpt of the last
    line for error records, and on resume turns lines up to ``skip_until`` into blank lines
    (which every format skips), so line numbers stay those of the file. A header line (the first
    non-blank one, for csv and IWF-style CSV) is passed through even then."""

    def __init__(self, fh: IO[bytes], *, skip_until: int = 0, keep_header: bool = False) -> None:
        self._fh = fh
        self._skip_until = skip_until
        self._keep_header = keep_header
        self._seen_content = False
        self._mid_line = False
        self.lines = 0
        self.pos = 0
        self._last = b""

    def readline(self, limit: int = -1) -> bytes:
        chunk = self._fh.readline(limit)
        if not chunk:
            return chunk
        self.pos += len(chunk)
        if self._mid_line:  # the rest of a line longer than ``limit``
            self._mid_line = not chunk.endswith(b"\n")
            return chunk
        self.lines += 1
        self._mid_line = not chunk.endswith(b"\n")
        self._last = chunk[:_RAW_EXCERPT]
        blank = not chunk.strip()
        header = not blank and not self._seen_content and self._keep_header
        self._seen_content = self._seen_content or not blank
        if self.lines > self._skip_until or header or blank:
            return chunk
        while self._mid_line:  # skip the whole line without holding it
            rest = self._fh.readline(64 * 1024)
            self.pos += len(rest)
            self._mid_line = bool(rest) and not rest.endswith(b"\n")
        return b"\n"

    def excerpt(self) -> str:
        return self._last.decode("utf-8", "replace").rstrip("\r\n")


class _Finisher:
    """Gives entries the configured provenance where their line has none, keeping them
    canonical (hex entries without provenance of their own take a fast path)."""

    def __init__(self, cfg: ListConfig, list_name: str) -> None:
        self.source = cfg.organisation
        self.list_name = list_name
        self.labels = list(cfg.labels)
        self.template = normalize_entry(
            NewEntry(
                SignalType.MD5,
                "0" * 32,
                source=self.source,
                list_name=self.list_name,
                labels=self.labels,
            )
        )

    def finish(self, e: NewEntry) -> NewEntry:
        if (
            not e.source
            and not e.list_name
            and not e.labels
            and not e.metadata
            and e.added_at is None
            and e.quality is None
            and e.url_match is None
            and e.enabled
            and not e.disabled_reason
        ):
            fast = canonical_hex_entry(e.signal_type, e.value, self.template)
            if fast is not None:
                return _with_external_id(fast, e.external_id)
        changes: dict[str, Any] = {}
        if not e.source and self.source:
            changes["source"] = self.source
        if not e.list_name and self.list_name:
            changes["list_name"] = self.list_name
        if not e.labels and self.labels:
            changes["labels"] = list(self.labels)
        return normalize_entry(replace(e, **changes)) if changes else e


def _with_external_id(e: NewEntry, external_id: str | None) -> NewEntry:
    """``e`` (canonical) with ``external_id`` (already validated), still canonical."""
    if e.external_id == external_id:
        return e
    object.__setattr__(e, "external_id", external_id)  # a fresh object nobody else holds
    return e


def _key(e: NewEntry) -> str:
    """The record key: the line's external id, else ``<signal_type>:<sha256 of the value>``
    (url entries matching by prefix or domain add that, so they differ from an exact URL)."""
    if e.external_id:
        return e.external_id
    digest = hashlib.sha256(e.value.encode("utf-8")).hexdigest()
    if e.url_match and e.url_match != "url":
        return f"{e.signal_type.value}:{e.url_match}:{digest}"
    return f"{e.signal_type.value}:{digest}"


def _check_allowed_path(path: Path) -> None:
    """When ``BASTION_LIST_DIRS`` is set (``:``-separated directories), local list files must
    lie under one of them: an exchange's settings may come over the API, and a list's bad lines
    are quoted in error records, which must not become a way to read the server's files."""
    allowed = [d for d in os.environ.get("BASTION_LIST_DIRS", "").split(os.pathsep) if d]
    if not allowed:
        return
    real = path.resolve()
    for directory in allowed:
        if real.is_relative_to(Path(directory).resolve()):
            return
    raise PermanentError("list file is outside the directories BASTION_LIST_DIRS allows")


def _fetch_error(exc: Any) -> Exception:
    """A FetchError as the exchange error the engine understands (no list contents in it)."""
    upstream = getattr(exc, "upstream_status", None)
    retry_after = getattr(exc, "retry_after", None)
    if exc.code in _PERMANENT_FETCH:
        return PermanentError(f"list download refused: {exc.message}")
    if upstream in (401, 403, 404, 410):
        return PermanentError(f"list download failed: {exc.message}")
    return TransientError(f"list download failed: {exc.message}", retry_after=retry_after)
