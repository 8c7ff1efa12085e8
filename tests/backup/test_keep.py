"""Which backups the worker keeps: the newest of each of the last N days, then the newest
of each of the M weeks before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fieldline.backup.keep import to_keep

# A Monday: ISO weeks start here.
MONDAY = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def daily_for(days: int, *, extra_today: bool = False) -> list[tuple[str, datetime]]:
    """A backup at 02:00 on each of `days` days up to MONDAY (named by their date)."""
    taken = [
        (f"{MONDAY - timedelta(days=n):%Y-%m-%d}", MONDAY - timedelta(days=n)) for n in range(days)
    ]
    if extra_today:
        taken.append(("manual-today", MONDAY + timedelta(hours=9)))
    return taken


def test_the_last_days_then_the_weeks_before() -> None:
    kept = to_keep(daily_for(60), daily=7, weekly=4)
    # The last seven days: 2026-12-01 (Tuesday) to 2026-12-07.
    assert sorted(kept)[-7:] == [f"2026-12-{day:02d}" for day in range(1, 8)]
    # Then the newest of each older week: Monday 2026-11-30, then the Sundays before.
    assert sorted(kept)[:-7] == ["2026-11-15", "2026-11-22", "2026-11-29", "2026-11-30"]
    assert len(kept) == 11


def test_the_newest_of_a_day_is_kept_and_a_day_counts_once() -> None:
    kept = to_keep(daily_for(3, extra_today=True), daily=2, weekly=0)
    assert kept == {"manual-today", "2026-12-06"}


def test_days_without_backups_do_not_count() -> None:
    """A worker down for three weeks keeps its last good backups, not an empty week."""
    taken = daily_for(3) + [(f"old-{n}", MONDAY - timedelta(days=25 + n)) for n in range(3)]
    assert to_keep(taken, daily=5, weekly=0) == {
        "2026-12-07",
        "2026-12-06",
        "2026-12-05",
        "old-0",
        "old-1",
    }


def test_nothing_to_keep_from_nothing() -> None:
    assert to_keep([], daily=7, weekly=4) == set()
