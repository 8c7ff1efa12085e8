"""The dashboard's files: served by fieldline itself, under a strict content policy."""

from __future__ import annotations

import re

from fieldline.web.mount import STATIC
from tests.api.conftest import Api

# Only XML namespaces may look like addresses: nothing is fetched from elsewhere.
_ADDRESS = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
_NAMESPACES = {"//www.w3.org"}


async def test_the_page_and_its_modules_are_served(api: Api) -> None:
    page = await api.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert '<script type="module" src="/ui/js/app.js">' in page.text

    script = await api.http.get("/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"

    missing = await api.http.get("/ui/js/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"]


async def test_every_asset_referenced_by_the_page_exists(api: Api) -> None:
    page = (await api.http.get("/")).text
    for path in re.findall(r'(?:href|src)="(/ui/[^"]+)"', page):
        assert (await api.http.get(path)).status_code == 200, path
    for module in STATIC.rglob("*.js"):
        # Static imports, and the page modules the router imports when they are opened.
        text = module.read_text()
        for imported in re.findall(r'(?:from|module:) "(\.{1,2}/[^"]+)"', text):
            assert (module.parent / imported).resolve().is_file(), f"{module.name}: {imported}"


def test_no_asset_loads_anything_from_another_host() -> None:
    # Vendored libraries (vendor/*/VENDORED.md) are copied unchanged: their comments and
    # credit links name their project's site. What the browser fetches when a map is open
    # is checked in tests/web/test_maps.py, with the network cut off.
    for asset in STATIC.rglob("*"):
        if asset.suffix not in {".html", ".js", ".css", ".svg"}:
            continue
        if "vendor" in asset.relative_to(STATIC).parts:
            continue
        found = {m.group(0).split(":", 1)[-1] for m in _ADDRESS.finditer(asset.read_text())}
        assert found <= _NAMESPACES, f"{asset.relative_to(STATIC)} refers to {found - _NAMESPACES}"
