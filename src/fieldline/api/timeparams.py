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


def time_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """`start` and `end` as given (default: the day before now), refused unless in order."""
    end_at = parse_instant(end, "end") or datetime.now(UTC)
    start_at = parse_instant(start, "start") or end_at - DEFAULT_RANGE
    if start_at >= end_at:
        raise ApiError(422, "start must be before end")
    return start_at, end_at


# Buckets one answer may hold: a chart asks for about 300.
MAX_BUCKETS = 20_000


def bucket_width(bucket: str, start: datetime, end: datetime) -> timedelta:
    """`bucket` as a duration, refused when the range would hold more than MAX_BUCKETS."""
    width = parse_duration(bucket, "bucket")
    if (end - start) / width > MAX_BUCKETS:
        raise ApiError(
            422, f"that range holds more than {MAX_BUCKETS} buckets; choose a wider bucket"
        )
    return width
