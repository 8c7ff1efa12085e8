"""Which backups to keep: the newest of each of the last N days, then, among the older
ones, the newest of each of the last M ISO weeks (FIELDLINE_BACKUP_KEEP_DAILY and
_WEEKLY); days and weeks in UTC.

Days and weeks count those that have a backup, not calendar days: a worker that was down
for a week does not come back to find its last good backups pruned. With the defaults (7
daily, 4 weekly) about five weeks are covered, each day of the last week restorable.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def to_keep(taken: Iterable[tuple[str, datetime]], *, daily: int, weekly: int) -> set[str]:
    """The ids among `taken` (id, time taken) to keep; the others may be deleted."""
    newest_first = sorted(taken, key=lambda backup: backup[1], reverse=True)
    kept: set[str] = set()
    days: set[object] = set()
    oldest_daily: datetime | None = None
    for backup_id, moment in newest_first:
        day = moment.date()
        if day in days:
            continue
        if len(days) == daily:
            break
        days.add(day)
        kept.add(backup_id)
        oldest_daily = moment
    weeks: set[object] = set()
    for backup_id, moment in newest_first:
        if oldest_daily is not None and moment.date() >= oldest_daily.date():
            continue  # a day the daily backups cover
        week = moment.isocalendar()[:2]
        if week in weeks:
            continue
        if len(weeks) == weekly:
            break
        weeks.add(week)
        kept.add(backup_id)
    return kept
