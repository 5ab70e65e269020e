"""HTTP client for NCMEC's CyberTipline Reporting API (``/status``, ``/submit``, ``/upload``,
``/fileinfo``, ``/finish``, ``/retract``), with HTTP Basic authentication.

NCMEC answers most failures with HTTP 200 and a non-zero ``responseCode`` inside the XML body;
every answer's code is checked here and turned into a typed :class:`NcmecError`, never
swallowed. Error messages are content-free (step, HTTP status, response code and NCMEC's
generic description), so they can be stored and shown to reviewers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx

from bastion.reports.ncmec_xml import XmlValidationError, parse_xml, validate

SUCCESS = 0
#: Response codes NCMEC documents (non-exhaustive). A retry does not fix the permanent ones.
RESPONSE_CODES = {
    0: "Success",
    1000: "Server error",
    1100: "Save failed",
    1110: "Upload failed",
    1111: "File upload failed",
    1210: "Resource not found",
    1300: "Update failed",
    2000: "Authentication required",
    3000: "User is not authorized to perform this action",
    3100: "User does not have authorization to make submissions",
    3300: "User does not have authorization to make updates",
    4000: "Invalid request",
    4100: "Validation failed",
    4110: "Malformed XML submittal",
    4200: "Malformed file submittal",
    5001: "Report does not exist",
    5002: "File does not exist",
    5101: "Report already retracted",
    5102: "Report already finished",
}
PERMANENT_CODES = frozenset({4000, 4100, 4110, 4200, 5001, 5002, 5101, 5102})
AUTH_CODES = frozenset({2000, 3000, 3100, 3300})
ALREADY_RETRACTED, ALREADY_FINISHED = 5101, 5102
_MAX_RESPONSE = 1 << 20


class NcmecError(Exception):
    """A CyberTipline call failed. ``retryable`` says whether trying again later may help."""

    retryable = True

    def __init__(
        self,
        step: str,
        message: str,
        *,
        status: int | None = None,
        response_code: int | None = None,
    ) -> None:
        self.step = step
        self.status = status
        self.response_code = response_code
        super().__init__(f"{step}: {message}")


class NcmecUnavailable(NcmecError):
    """No usable answer: connection failure, timeout or an HTTP 5xx."""


class NcmecAuthError(NcmecError):
    """HTTP 401/403 or an authentication/authorization response code: check the credentials
    (retryable: fixing them in the console lets the next attempt through)."""


class NcmecRejected(NcmecError):
    """NCMEC answered with a non-zero response code."""

    def __init__(self, step: str, code: int, *, status: int | None = None) -> None:
        description = RESPONSE_CODES.get(code, "unknown response code")
        super().__init__(
            step, f"NCMEC response code {code} ({description})", status=status, response_code=code
        )
        self.retryable = code not in PERMANENT_CODES


class NcmecProtocolError(NcmecError):
    """An answer that is not the documented XML (missing code or id)."""


class InvalidDocument(NcmecError):
    """Our own document failed validation before sending; nothing was sent."""

    retryable = False


@dataclass(frozen=True)
class Response:
    """A parsed answer: the root element's name, ``responseCode`` and named child texts."""

    root: str
    code: int
    description: str
    fields: dict[str, list[str]]

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Uploaded:
    file_id: str
    md5: str | None


class CyberTiplineClient:
    """One client per configured endpoint. ``transport`` is for tests only; the test suite
    talks to a real loopback server instead."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("the CyberTipline URL must use https (plain http only on loopback)")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            auth=httpx.BasicAuth(username, password),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CyberTiplineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the CyberTipline's calls ----------------------------------------------------------------

    def status(self) -> Response:
        """``GET /status``: can we connect and authenticate?"""
        return self._call("status", "GET", "/status")

    def submit(self, report_xml: bytes) -> str:
        """``POST /submit``: open a report; returns NCMEC's report id."""
        _validated("submit", report_xml, "report")
        answer = self._call("submit", "POST", "/submit", content=report_xml, headers=_XML_HEADERS)
        return _required_int("submit", answer, "reportId")

    def upload(self, report_id: str, filename: str, data: bytes) -> Uploaded:
        """``POST /upload`` (multipart ``id`` + ``file``): returns NCMEC's file id."""
        answer = self._call(
            "upload",
            "POST",
            "/upload",
            data={"id": report_id},
            files={"file": (filename, data, "application/octet-stream")},
        )
        file_id = answer.first("fileId")
        if not file_id:
            raise NcmecProtocolError("upload", "answer has no fileId")
        return Uploaded(file_id, answer.first("hash"))

    def fileinfo(self, details_xml: bytes) -> None:
        """``POST /fileinfo``: describe an uploaded file."""
        _validated("fileinfo", details_xml, "fileDetails")
        self._call("fileinfo", "POST", "/fileinfo", content=details_xml, headers=_XML_HEADERS)

    def finish(self, report_id: str) -> list[str]:
        """``POST /finish``: complete the report; returns the file ids NCMEC holds for it.
        An "already finished" answer counts as success (a retry after a lost answer)."""
        answer = self._call(
            "finish", "POST", "/finish", data={"id": report_id}, ok=(ALREADY_FINISHED,)
        )
        return answer.fields.get("fileId", [])

    def retract(self, report_id: str) -> None:
        """``POST /retract``: cancel an unfinished report ("already retracted" is success)."""
        self._call("retract", "POST", "/retract", data={"id": report_id}, ok=(ALREADY_RETRACTED,))

    # -- plumbing ------------------------------------------------------------------------------

    def _call(
        self,
        step: str,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (),
        **kwargs: object,
    ) -> Response:
        try:
            r = self._http.request(method, self.base_url + path, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            raise NcmecUnavailable(step, "timed out waiting for NCMEC") from None
        except httpx.HTTPError as exc:
            raise NcmecUnavailable(step, f"cannot reach NCMEC ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise NcmecAuthError(
                step, f"HTTP {r.status_code}: check the NCMEC credentials", status=r.status_code
            )
        if r.status_code >= 500:
            raise NcmecUnavailable(step, f"HTTP {r.status_code}", status=r.status_code)
        answer = _parse(step, r.content, r.status_code)
        if answer.code != SUCCESS and answer.code not in ok:
            if answer.code in AUTH_CODES:
                raise NcmecAuthError(
                    step,
                    f"NCMEC response code {answer.code} ({RESPONSE_CODES[answer.code]})",
                    status=r.status_code,
                    response_code=answer.code,
                )
            raise NcmecRejected(step, answer.code, status=r.status_code)
        if r.status_code != 200:
            raise NcmecProtocolError(step, f"HTTP {r.status_code}", status=r.status_code)
        return answer


_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


def _validated(step: str, document: bytes, root: str) -> None:
    try:
        validate(document, root)
    except XmlValidationError as exc:
        raise InvalidDocument(step, f"document fails schema checks: {exc}") from None


def _parse(step: str, body: bytes, status: int) -> Response:
    if len(body) > _MAX_RESPONSE:
        raise NcmecProtocolError(step, "answer too large", status=status)
    try:
        root = parse_xml(body)
    except XmlValidationError:
        if status >= 400:
            raise NcmecProtocolError(step, f"HTTP {status}", status=status) from None
        raise NcmecProtocolError(step, "answer is not XML", status=status) from None
    fields: dict[str, list[str]] = {}
    for el in root.iter():
        if el is not root and not len(el):
            fields.setdefault(_local(el), []).append((el.text or "").strip())
    code_text = (fields.get("responseCode") or [""])[0]
    try:
        code = int(code_text)
    except ValueError:
        raise NcmecProtocolError(step, "answer has no responseCode", status=status) from None
    description = (fields.get("responseDescription") or [""])[0]
    return Response(_local(root), code, description, fields)


def _local(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def _required_int(step: str, answer: Response, name: str) -> str:
    value = answer.first(name)
    if not value or not value.isdigit():
        raise NcmecProtocolError(step, f"answer has no {name}")
    return value
