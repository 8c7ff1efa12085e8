"""Time query parameters: instants as ISO 8601 or epoch seconds, durations like `5m`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fieldline.api.errors import ApiError

# A range without a start: the day before its end.
DEFAULT_RANGE = timedelta(hours=24)
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            return datetime.fromtimestamp(float(value), tz=UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise ApiError(422, f"{name} must be ISO 8601 or epoch seconds, not {value!r}") from exc
    return as_utc(parsed)


def as_utc(moment: datetime) -> datetime:
    """In UTC; a time given without a zone is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_duration(value: str, name: str) -> timedelta:
    match = _DURATION.fullmatch(value.strip())
    if not match or int(match[1]) == 0:
        raise ApiError(422, f"{name} must be a positive duration like 30s, 5m, 1h, 1d or 1w")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})
