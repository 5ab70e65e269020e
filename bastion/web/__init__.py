"""The reviewer and admin console: server-rendered pages on the API's app (see docs/console.md).

``router`` carries every console route; :func:`bastion.server.create_app` includes it. Nothing
here is in the OpenAPI document: the console is for people with a session cookie, the API for
keys.
"""

from fastapi import APIRouter

from bastion.web import account, admin, cases, exchanges, login, reports, search, team

router = APIRouter(include_in_schema=False)
router.include_router(login.router)
router.include_router(cases.router)
router.include_router(cases.media_router)
router.include_router(admin.router)
router.include_router(account.router)
router.include_router(reports.router)
router.include_router(exchanges.router)
router.include_router(search.router)
router.include_router(team.router)

__all__ = ["router"]
