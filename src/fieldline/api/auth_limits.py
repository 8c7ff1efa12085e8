"""Limits on failed credentials, per client address and per account.

What counts as a failure: a wrong password (a user's login or password change, a
device's HTTP Basic) or a wrong API key, for an account that exists or not (so a 429
tells nothing about which accounts exist). Tokens do not count: a forged token cannot
be guessed and costs one HMAC to refuse. Nor does a device password or an API key that
matched within the minute (`VerifiedSecrets`): it is no guess, so a device or a script
in use keeps working while someone guesses at its account.

Both limits are checked before any password hash is computed: past a limit the answer
is 429 with `Retry-After`, which is what saves the CPU a PBKDF2 check costs.

- Per address (`AddressFailures`): in memory, in each API process. It is the strong
  limit, the one a guesser meets first, and costs nothing to check; an IPv6 client
  counts by its /64, which one subscriber usually holds whole. With several API
  processes behind a proxy a guesser may get this many tries from each.
- Per account (`domain.lockout`): in PostgreSQL (`storage.auth_failures`), shared by
  every API process, so spreading tries over processes or addresses gains nothing. It
  locks for a while and backs off, never for good: every lock ends, and a success
  forgets the account's failures. Its cost on the success path is one read by key; it
  writes only on failures, or on a success after failures.

The audit log records a lockout when it begins (actor: the address, target: the
account), not each failed try: a guesser must not be able to flood the audit log.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from fastapi import Request
from psycopg import AsyncConnection

from fieldline.api.errors import ApiError
from fieldline.config import Settings
from fieldline.domain.lockout import CredentialKind, FailureRecord, LockoutPolicy
from fieldline.storage import audit as audit_store
from fieldline.storage import auth_failures as failure_store
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

DEFAULT_MAX_ADDRESSES = 100_000
IPV6_PREFIX = 64


def client_address(request: Request) -> str:
    """Whom the limits count a request against: its peer's address, an IPv6 peer's /64.

    The peer is the socket's, or what a trusted proxy says (`FIELDLINE_TRUSTED_PROXIES`,
    applied by the HTTP server before the request gets here).
    """
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class AddressFailures:
    """At most `limit` failures per address within `window` seconds, then one per
    window/limit seconds: a token bucket in its GCRA form, one float per address.

    Each failure moves the address's "budget full again" time a window/limit further;
    an address whose time has passed has its whole budget and is forgotten. A block is
    reported once, until the address has its whole budget again. At most
    `max_addresses` are tracked: past that, those nearest to a full budget are
    forgotten first, so a blocked address stays blocked. One event loop uses it.
    """

    __slots__ = ("_clock", "_full_at", "_interval", "_max_addresses", "_reported", "_window")

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._interval = window / limit
        self._max_addresses = max_addresses
        self._clock = clock
        self._full_at: dict[str, float] = {}
        self._reported: set[str] = set()  # blocked, and said so

    def blocked_for(self, address: str) -> float | None:
        """Seconds until the address may try again; None when it may now."""
        full_at = self._full_at.get(address)
        if full_at is None:
            return None
        # Another failure now would put the budget's end beyond one window from now.
        wait = full_at + self._interval - self._clock() - self._window
        return wait if wait > 0 else None

    def failed(self, address: str) -> bool:
        """Count a failure; True when it used up the address's budget, for the first time
        since the address last had all of it (the moment to tell the audit log)."""
        now = self._clock()
        full_at = self._full_at.get(address)
        if full_at is None or full_at <= now:
            self._reported.discard(address)
            full_at = now
            if len(self._full_at) >= self._max_addresses:
                self._sweep(now)
        self._full_at[address] = full_at + self._interval
        if self.blocked_for(address) is None or address in self._reported:
            return False
        self._reported.add(address)
        return True

    def _sweep(self, now: float) -> None:
        live = {address: at for address, at in self._full_at.items() if at > now}
        if len(live) >= self._max_addresses:
            live = dict(heapq.nlargest(self._max_addresses // 2, live.items(), key=itemgetter(1)))
        self._full_at = live
        self._reported &= live.keys()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a secret: whose account, from where."""

    kind: CredentialKind
    account: str
    address: str


def _too_many(seconds: float, whence: str) -> ApiError:
    wait = max(1, math.ceil(seconds))
    return ApiError(
        429,
        f"too many failed attempts {whence}; try again in {wait} s",
        code="too_many_failures",
        headers={"Retry-After": str(wait)},
    )


class AuthLimits:
    """Both limits; `check` before a secret is verified, then `failed` or `succeeded`."""

    def __init__(
        self,
        settings: Settings,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        window = settings.auth_failure_window_seconds
        self.policy = LockoutPolicy(
            max_failures=settings.auth_max_failures_per_account, window=timedelta(seconds=window)
        )
        self.addresses = AddressFailures(
            settings.auth_max_failures_per_address, window, clock=clock
        )
        self._now = wall_clock

    async def check(self, conn: AsyncConnection[Row], attempt: Attempt) -> FailureRecord | None:
        """Refuse with 429 when the address or the account is over its limit; answer the
        account's record of failures (None: nothing to forget on success)."""
        blocked = self.addresses.blocked_for(attempt.address)
        if blocked is not None:
            raise _too_many(blocked, "from this address")
        now = self._now()
        record = await failure_store.get(conn, attempt.kind, attempt.account, now=now)
        locked = record.locked_for(now) if record is not None else None
        if locked is not None:
            raise _too_many(locked.total_seconds(), "for this account")
        return record

    async def failed(self, conn: AsyncConnection[Row], attempt: Attempt) -> None:
        now = self._now()
        address_blocked = self.addresses.failed(attempt.address)
        before, after = await failure_store.record_failure(
            conn, attempt.kind, attempt.account, now=now, policy=self.policy
        )
        if after.lockouts > before.lockouts and after.locked_until is not None:
            await _record_lockout(
                conn,
                attempt,
                scope="account",
                seconds=(after.locked_until - now).total_seconds(),
                detail={"lockouts_in_a_row": after.lockouts},
            )
        blocked = self.addresses.blocked_for(attempt.address) if address_blocked else None
        if blocked is not None:
            await _record_lockout(conn, attempt, scope="address", seconds=blocked, detail={})

    async def succeeded(
        self, conn: AsyncConnection[Row], attempt: Attempt, record: FailureRecord | None
    ) -> None:
        if record is not None:
            await failure_store.forget(conn, attempt.kind, attempt.account)


async def _record_lockout(
    conn: AsyncConnection[Row],
    attempt: Attempt,
    *,
    scope: str,
    seconds: float,
    detail: dict[str, int],
) -> None:
    retry_after = max(1, math.ceil(seconds))
    log.warning(
        "failed credentials lockout",
        extra={
            "scope": scope,
            "kind": attempt.kind.value,
            "account": attempt.account,
            "address": attempt.address,
            "retry_after": retry_after,
        },
    )
    await audit_store.record(
        conn,
        actor=audit_store.address_actor(attempt.address),
        action="auth.lockout",
        target_type=attempt.kind.value,
        target_id=attempt.account,
        detail={"scope": scope, "retry_after_seconds": retry_after, **detail},
    )
