"""The one error table (bastion.errors): what the API and the console answer to domain errors."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus

import pytest
from sqlalchemy.exc import OperationalError

from bastion.api.problems import problem_for
from bastion.errors import ERRORS, STORE_DOWN, http_error
from bastion.reports.errors import ReportExists
from bastion.review import CaseLeased, CaseNotFound, InvalidDecision, RevealRequired
from bastion.store import BankExists, InvalidInput, StoreError, StoreUnavailable
from bastion.web.base import page_error


def test_every_row_is_a_real_status_and_the_console_differs_only_where_it_says() -> None:
    for kind, row in ERRORS.items():
        assert HTTPStatus(row.status) and HTTPStatus(row.page_status), kind
        assert row.page_status == row.status or row.status == 422, kind


def test_a_subclass_without_a_row_answers_as_its_base() -> None:
    class Gone(CaseNotFound):
        pass

    assert http_error(Gone("x")) is ERRORS[CaseNotFound]
    assert http_error(RuntimeError("x")) is None


def test_the_api_answers_with_the_row_and_the_cases_api_adds_its_code() -> None:
    assert problem_for(InvalidInput("bad")).body() == {
        "type": "about:blank",
        "title": "Invalid request",
        "status": 422,
        "detail": "bad",
    }
    assert problem_for(InvalidInput("bad"), codes=True).body()["code"] == "invalid"
    assert problem_for(BankExists("taken")).status == 409
    until = datetime(2030, 1, 1, tzinfo=UTC)
    leased = problem_for(CaseLeased("ada", until), codes=True).body()
    assert list(leased)[-3:] == ["code", "holder", "until"]
    assert leased["holder"] == "ada" and leased["until"] == until.isoformat()
    assert problem_for(RevealRequired([3, 4]), codes=True).body()["items"] == [3, 4]
    assert problem_for(ReportExists(7)).body()["report_id"] == 7


def test_store_failures_never_show_their_message() -> None:
    for exc in (StoreUnavailable("db at 10.0.0.5 down"), OperationalError("SELECT", {}, None)):
        problem = problem_for(exc)
        assert (problem.status, problem.detail) == (503, STORE_DOWN)
    assert problem_for(StoreError("odd")).detail == STORE_DOWN
    assert problem_for(ValueError("no")).status == 422


@pytest.mark.parametrize(
    ("exc", "status", "title"),
    [
        (InvalidInput("bad"), 400, "Invalid input"),
        (InvalidDecision("bad"), 400, "Invalid decision"),
        (CaseNotFound("no case"), 404, "Not found"),
        (StoreUnavailable("down"), 503, "Store unavailable"),
    ],
)
def test_the_console_reads_the_same_table(exc: Exception, status: int, title: str) -> None:
    error = page_error(exc)
    assert error is not None and (error.status, error.title) == (status, title)
