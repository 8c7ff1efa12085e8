"""The web dashboard: static pages served by fieldline itself, talking to the API.

Everything the browser loads comes from this package (no CDN, no build step):
hand-written ES modules and CSS under `static/`. The page at `/` is the only
HTML; the dashboard routes within it (`/#/devices/…`).
"""

from fieldline.web.mount import mount_dashboard

__all__ = ["mount_dashboard"]
