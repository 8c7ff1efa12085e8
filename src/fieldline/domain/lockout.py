"""When failed credentials lock an account for a while (pure rules; storage keeps the records).

An account (a user, a device, an API key) that fails `max_failures` times within `window`
is locked: every try is refused, before any password is checked, until the lock ends.
Locks are temporary and grow: the first lasts `first_lockout`, each one in a row twice
the one before, up to `window`. So a guesser gets about `max_failures` tries per window
however many addresses it has, while the account's owner is never locked out for good:
every lock ends, and a success forgets the account's failures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

# Past this many locks in a row every lock lasts `window` anyway; caps the exponent.
_MAX_DOUBLINGS = 30


class CredentialKind(StrEnum):
    USER = "user"
    DEVICE = "device"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int
    window: timedelta
    first_lockout: timedelta = timedelta(minutes=1)

    def lockout_length(self, lockouts: int) -> timedelta:
        """How long the `lockouts`-th lock in a row (1 for the first) lasts."""
        doublings = min(max(lockouts - 1, 0), _MAX_DOUBLINGS)
        return min(self.first_lockout * (1 << doublings), self.window)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One account's recent failures."""

    failures: int  # within the window that started at window_started
    window_started: datetime
    lockouts: int  # locks in a row; forgotten with the record
    locked_until: datetime | None

    @classmethod
    def empty(cls, now: datetime) -> FailureRecord:
        return cls(failures=0, window_started=now, lockouts=0, locked_until=None)

    def locked_for(self, now: datetime) -> timedelta | None:
        """How long the account stays locked; None when it is not."""
        if self.locked_until is None or self.locked_until <= now:
            return None
        return self.locked_until - now

    def after_failure(self, now: datetime, policy: LockoutPolicy) -> FailureRecord:
        if now >= self.window_started + policy.window:
            counted = replace(self, failures=1, window_started=now)
        else:
            counted = replace(self, failures=self.failures + 1)
        if counted.failures < policy.max_failures:
            return counted
        lockouts = self.lockouts + 1
        return FailureRecord(
            failures=0,
            window_started=now,
            lockouts=lockouts,
            locked_until=now + policy.lockout_length(lockouts),
        )

    def expires_at(self, policy: LockoutPolicy) -> datetime:
        """When the record says nothing any more: a window after its failures and its lock.

        Until then a new lock counts as one more in a row, so a guesser who waits out
        each lock meets longer and longer ones.
        """
        end = self.window_started + policy.window
        if self.locked_until is not None:
            end = max(end, self.locked_until)
        return end + policy.window
