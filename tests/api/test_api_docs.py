"""/docs works without internet access: every file it loads comes from fieldline (issue 12)."""

from __future__ import annotations

import re

from fieldline.web.mount import STATIC
from tests.api.conftest import Api

_ADDRESS = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


async def test_docs_and_everything_it_loads_come_from_here(api: Api) -> None:
    page = await api.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy  # no inline script, nothing from elsewhere
    assert "<script>" not in page.text
    assert not _ADDRESS.findall(page.text)

    referenced = re.findall(r'(?:href|src)="([^"]+)"', page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(referenced)
    for path in referenced:
        assert path.startswith("/"), path  # this host
        asset = await api.http.get(path)
        assert asset.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], path
    start = (await api.http.get("/ui/docs/start.js")).text
    assert not _ADDRESS.findall(start)
    assert "validatorUrl: null" in start  # Swagger UI would ask a validator on the internet
    assert '"/openapi.json"' in start
    assert (await api.http.get("/openapi.json")).status_code == 200


async def test_only_swagger_uis_own_files_are_served(api: Api) -> None:
    for path in ("/docs/assets/core.py", "/docs/assets/../mount.py", "/docs/assets/"):
        assert (await api.http.get(path)).status_code == 404, path


async def test_redoc_is_not_offered(api: Api) -> None:
    """/docs is the one documentation page; nothing else loads a bundle from a CDN."""
    assert (await api.http.get("/redoc")).status_code == 404


def test_the_docs_page_is_part_of_the_package() -> None:
    assert (STATIC / "docs" / "index.html").is_file()
    assert (STATIC / "docs" / "start.js").is_file()
