"""The server: the API and the reviewer console on one FastAPI app.

``create_app(settings)`` is all a test or ``bastion serve`` needs. The two edges never import
each other; this is the one place that puts them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.app import create_api_app
from bastion.web import router as console_router

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bastion.config import Settings
    from bastion.db import Store


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The API (:func:`bastion.api.app.create_api_app`) with the console's routes."""
    app = create_api_app(settings, store=store)
    app.include_router(console_router)
    return app
