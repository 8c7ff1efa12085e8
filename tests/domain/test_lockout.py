"""The rules of account lockouts: a lock after too many failures in a window, growing
locks in a row, and nothing remembered for ever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fieldline.domain.lockout import FailureRecord, LockoutPolicy

START = datetime(2026, 12, 1, tzinfo=UTC)
POLICY = LockoutPolicy(max_failures=3, window=timedelta(minutes=15))


def fail(record: FailureRecord, at: datetime, times: int = 1) -> FailureRecord:
    for _ in range(times):
        record = record.after_failure(at, POLICY)
    return record


def test_the_limit_locks_and_the_lock_ends() -> None:
    record = fail(FailureRecord.empty(START), START, 2)
    assert record.locked_for(START) is None
    record = fail(record, START)
    assert record.locked_for(START) == timedelta(minutes=1)
    assert record.locked_for(START + timedelta(minutes=1)) is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    record = fail(FailureRecord.empty(START), START, 2)
    later = START + timedelta(minutes=15)
    record = fail(record, later, 2)
    assert record.locked_for(later) is None
    assert record.failures == 2


def test_locks_in_a_row_double_up_to_the_window() -> None:
    record, now, lengths = FailureRecord.empty(START), START, []
    for _ in range(6):
        record = fail(record, now, 3)
        locked = record.locked_for(now)
        assert locked is not None
        lengths.append(locked)
        now += locked
    minutes = [length.total_seconds() / 60 for length in lengths]
    assert minutes == [1, 2, 4, 8, 15, 15]


def test_a_record_expires_a_window_after_its_lock() -> None:
    record = fail(FailureRecord.empty(START), START, 3)
    assert record.expires_at(POLICY) == START + timedelta(minutes=30)
    long_lock = LockoutPolicy(3, timedelta(minutes=15), first_lockout=timedelta(minutes=20))
    locked = FailureRecord.empty(START).after_failure(START, long_lock)
    assert locked.expires_at(long_lock) == START + timedelta(minutes=30)


def test_lock_lengths_stay_bounded_however_many_in_a_row() -> None:
    assert POLICY.lockout_length(10_000) == POLICY.window
