"""Serve the dashboard at `/` and its assets under `/ui/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(str(resources.files("fieldline.web") / "static"))

# The dashboard loads nothing from elsewhere and runs no inline script, so a strict
# policy costs nothing and blunts any markup that slips through into a page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap: ETag), so an upgrade is seen at the next load.
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    @app.get("/ui", include_in_schema=False)
    async def dashboard_alias() -> Response:
        return RedirectResponse("/")

    app.mount("/ui", _Assets(directory=STATIC), name="ui")
