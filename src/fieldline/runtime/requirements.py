"""What a single component needs beyond valid settings.

Settings refuses combinations that are wrong whatever runs (config.py); these
depend on the component: `fieldline up` runs its own database and broker, the
single components reach servers they do not start.
"""

from __future__ import annotations

from typing import Literal

from fieldline.config import BrokerKind, Settings

Component = Literal["api", "ingest", "worker"]
# The worker delivers downlinks through a broker when it has one; it needs none.
_NEEDS_EXTERNAL_BROKER: frozenset[Component] = frozenset({"api", "ingest"})


class ConfigurationError(ValueError):
    """The settings cannot run the component asked for; the message says what to set."""


def check_component(settings: Settings, component: Component) -> str:
    """Refuse settings `fieldline <component>` cannot run with; answer its database URL."""
    if not settings.database_url:
        raise ConfigurationError(
            f"`fieldline {component}` runs against an external PostgreSQL: set DATABASE_URL "
            "(`fieldline up` runs an embedded one)"
        )
    if component in _NEEDS_EXTERNAL_BROKER and settings.broker != BrokerKind.EXTERNAL:
        raise ConfigurationError(
            f"`fieldline {component}` runs against a broker it does not start: set "
            "FIELDLINE_BROKER=external and the broker settings (`fieldline up` manages one)"
        )
    return settings.database_url
