"""One webhook attempt: POST the stored body, signed, and classify the answer.

Redirects are not followed (a signed request must not wander to another host) and proxy
settings from the environment are ignored, so a request goes exactly where the config says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bastion import __version__
from bastion.actions.model import Outcome, classify_status
from bastion.actions.signing import SIGNATURE_HEADER, sign
from bastion.actions.targets import Target

USER_AGENT = f"Bastion/{__version__}"
#: How much of a refusing receiver's answer is kept in ``last_error``.
_SNIPPET = 300
_READ_LIMIT = 8192


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    error: str | None = None


def make_client() -> httpx.Client:
    return httpx.Client(
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def build_headers(
    target: Target, *, action: str, idempotency_key: str, body: bytes, timestamp: int
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key,
        "Bastion-Action": action,
        SIGNATURE_HEADER: sign(target.secret, body, timestamp=timestamp),
    }


def deliver(
    client: httpx.Client,
    target: Target,
    *,
    action: str,
    idempotency_key: str,
    body: bytes,
    clock: Callable[[], float] = time.time,
) -> Attempt:
    """Send once; never raises for network or HTTP trouble (that is what :class:`Attempt` says).
    The signature is made now, so a retry hours later still passes a receiver's timestamp check,
    while the body stays byte for byte the same."""
    headers = build_headers(
        target,
        action=action,
        idempotency_key=idempotency_key,
        body=body,
        timestamp=int(clock()),
    )
    try:
        with client.stream(
            "POST",
            target.url,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(target.timeout),
        ) as response:
            status = response.status_code
            outcome = classify_status(status)
            if outcome is Outcome.DELIVERED:
                return Attempt(outcome, status)
            if 300 <= status < 400:
                where = response.headers.get("location", "?")
                error = (
                    f"HTTP {status}: redirect to {_printable(where)[:200]} not followed; "
                    "configure the final URL"
                )
            else:
                snippet = _snippet(response)
                error = f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"
            return Attempt(outcome, status, error)
    except httpx.TimeoutException:
        return Attempt(Outcome.RETRY, None, f"timed out after {target.timeout:g} s")
    except httpx.HTTPError as exc:
        return Attempt(Outcome.RETRY, None, f"{type(exc).__name__}: {_printable(str(exc))}")


def _snippet(response: httpx.Response) -> str:
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= _READ_LIMIT:
                break
    except httpx.HTTPError:
        pass
    text = _printable(data[:_READ_LIMIT].decode("utf-8", "replace")).strip()
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)
