"""The web dashboard: static pages served by fieldline itself, talking to the API.

Everything the browser loads comes from this package (no CDN, no build step):
hand-written ES modules and CSS under `static/`. The page at `/` is the only
HTML; the dashboard routes within it (`/#/devices/…`). The API's interactive docs at
`/docs` are Swagger UI, its files from the fastapi-offline package.
"""

from fieldline.web.mount import mount_api_docs, mount_dashboard

__all__ = ["mount_api_docs", "mount_dashboard"]
