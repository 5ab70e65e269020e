"""A fake CyberTipline Reporting API on a real loopback port, written from NCMEC's documentation.

It enforces HTTP Basic auth, the call order per report (submit -> upload -> fileinfo for that
file -> finish, or retract while unfinished), element order and shape of both documents (the
documented sequence in ``bastion.reports.ncmec_xml.SCHEMA``; out of order answers response code
4100 inside HTTP 200, as NCMEC does), unknown report and file ids (5001/5002), and can inject a
failure at each step: HTTP 500, an HTTP 200 with a failure response code, or a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.reports.ncmec_xml import XmlValidationError, validate
from tests.fixtures.servers import AppServer

USER, PASSWORD = "esp-test", "correct horse battery"


@dataclass
class FakeFile:
    report_id: str
    md5: str
    name: str
    fileinfo: int = 0


@dataclass
class FakeReport:
    id: str
    xml: bytes
    state: str = "open"  # open | finished | retracted
    files: list[str] = field(default_factory=list)


class FakeCyberTipline:
    def __init__(self) -> None:
        self.reports: dict[str, FakeReport] = {}
        self.files: dict[str, FakeFile] = {}
        self.calls: list[str] = []
        #: step -> queue of failure modes: "http500", "code:<n>", "timeout", "lost" (apply the
        #: call, then time out without answering).
        self.failures: dict[str, list[str]] = defaultdict(list)
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/ispws/status", self.status, methods=["GET"]),
                Route("/ispws/submit", self.submit, methods=["POST"]),
                Route("/ispws/upload", self.upload, methods=["POST"]),
                Route("/ispws/fileinfo", self.fileinfo, methods=["POST"]),
                Route("/ispws/finish", self.finish, methods=["POST"]),
                Route("/ispws/retract", self.retract, methods=["POST"]),
            ]
        )

    def fail(self, step: str, *modes: str) -> None:
        self.failures[step].extend(modes)

    def finished(self) -> list[FakeReport]:
        return [r for r in self.reports.values() if r.state == "finished"]

    # -- plumbing ------------------------------------------------------------------------------

    async def _gate(self, request: Request, step: str) -> tuple[Response | None, str | None]:
        header = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if header != expected:
            return Response("", status_code=401, headers={"WWW-Authenticate": "Basic"}), None
        self.calls.append(step)
        mode = self.failures[step].pop(0) if self.failures[step] else None
        if mode == "http500":
            return Response("<html>error</html>", status_code=500), None
        if mode and mode.startswith("code:"):
            return _answer(int(mode[5:])), None
        if mode == "timeout":
            await asyncio.sleep(1.5)
            return _answer(1000), None
        return None, mode

    async def _after(self, mode: str | None, answer: Response) -> Response:
        if mode == "lost":
            await asyncio.sleep(1.5)
        return answer

    # -- the endpoints --------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        early, _ = await self._gate(request, "status")
        return early or _answer(0)

    async def submit(self, request: Request) -> Response:
        early, mode = await self._gate(request, "submit")
        if early:
            return early
        body = await request.body()
        try:
            validate(body, "report")
        except XmlValidationError:
            return _answer(4100)
        with self._lock:
            rid = str(next(self._ids))
            self.reports[rid] = FakeReport(rid, body)
        return await self._after(mode, _answer(0, reportId=rid))

    async def upload(self, request: Request) -> Response:
        early, mode = await self._gate(request, "upload")
        if early:
            return early
        form = await request.form()
        report = self.reports.get(str(form.get("id")))
        upload = form.get("file")
        if report is None:
            return _answer(5001)
        if report.state != "open":
            return _answer(5102 if report.state == "finished" else 5101)
        if upload is None or isinstance(upload, str):
            return _answer(4200)
        data = await upload.read()
        md5 = hashlib.md5(data).hexdigest()
        fid = uuid.uuid4().hex
        with self._lock:
            self.files[fid] = FakeFile(report.id, md5, upload.filename or "")
            report.files.append(fid)
        return await self._after(mode, _answer(0, reportId=report.id, fileId=fid, hash=md5))

    async def fileinfo(self, request: Request) -> Response:
        early, mode = await self._gate(request, "fileinfo")
        if early:
            return early
        body = await request.body()
        try:
            root = validate(body, "fileDetails")
        except XmlValidationError:
            return _answer(4100)
        report = self.reports.get(root.findtext("reportId") or "")
        f = self.files.get(root.findtext("fileId") or "")
        if report is None:
            return _answer(5001)
        if f is None or f.report_id != report.id:
            return _answer(5002)
        if report.state != "open":
            return _answer(5102 if report.state == "finished" else 5101)
        hashes = {h.get("hashType"): h.text for h in root.findall("originalFileHash")}
        if hashes.get("MD5") != f.md5:
            return _answer(4100)
        f.fileinfo += 1
        return await self._after(mode, _answer(0, reportId=report.id))

    async def finish(self, request: Request) -> Response:
        early, mode = await self._gate(request, "finish")
        if early:
            return early
        form = await request.form()
        report = self.reports.get(str(form.get("id")))
        if report is None:
            return _answer(5001)
        if report.state == "retracted":
            return _answer(5101)
        if report.state == "finished":
            return _answer(5102)
        # Documented order: every uploaded file should have been described first.
        if any(self.files[f].fileinfo == 0 for f in report.files):
            return _answer(4000)
        report.state = "finished"
        files = "".join(f"<fileId>{f}</fileId>" for f in report.files)
        return await self._after(
            mode, _raw(f"<reportId>{report.id}</reportId><files>{files}</files>", 0)
        )

    async def retract(self, request: Request) -> Response:
        early, mode = await self._gate(request, "retract")
        if early:
            return early
        form = await request.form()
        report = self.reports.get(str(form.get("id")))
        if report is None:
            return _answer(5001)
        if report.state == "finished":
            return _answer(5102)
        if report.state == "retracted":
            return _answer(5101)
        report.state = "retracted"
        return await self._after(mode, _answer(0, reportId=report.id))


def _answer(code: int, **fields: str) -> Response:
    extra = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return _raw(extra, code)


def _raw(extra: str, code: int) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><reportResponse>'
        f"<responseCode>{code}</responseCode>"
        f"<responseDescription>{'Success' if code == 0 else 'Failure'}</responseDescription>"
        f"{extra}</reportResponse>"
    )
    return Response(body, status_code=200, media_type="text/xml")


class LoopbackServer(AppServer):
    """The fake CyberTipline's app on loopback (no lifespan); ``url`` is its service root."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(app, lifespan="off")

    @property
    def url(self) -> str:
        return f"{self.base}/ispws"

    def start(self) -> LoopbackServer:
        super().start()
        return self
