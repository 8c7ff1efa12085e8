"""Serve the dashboard at `/` and its assets under `/ui/`; the API's docs at `/docs`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(str(resources.files("fieldline.web") / "static"))
# Swagger UI's own files, from the fastapi-offline package: /docs needs no internet.
SWAGGER_UI = Path(str(resources.files("fastapi_offline") / "static"))
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})

# Revalidate every time (cheap: ETag), so an upgrade is seen at the next load. The security
# headers every response gets come from fieldline.ops.headers.SecurityHeadersMiddleware.
REVALIDATE = {"Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    def __init__(self, directory: Path, *, only: frozenset[str] | None = None) -> None:
        super().__init__(directory=directory)
        self.only = only

    async def get_response(self, path: str, scope: Scope) -> Response:
        if self.only is not None and path not in self.only:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update(REVALIDATE)
        return response


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    @app.get("/ui", include_in_schema=False)
    async def dashboard_alias() -> Response:
        return RedirectResponse("/")

    app.mount("/ui", _Assets(STATIC), name="ui")


def mount_api_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, every file of it served from here (ReDoc is not offered)."""

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> Response:
        return FileResponse(STATIC / "docs" / "index.html", headers=REVALIDATE)

    app.mount("/docs/assets", _Assets(SWAGGER_UI, only=SWAGGER_UI_FILES), name="docs-assets")
