"""System alerts: fieldline's own health checks (`domain.health`) raised as alerts.

A check that has failed for its duration opens an alert of kind `system`, told on
every enabled channel (like a failing channel's: never silenced); it resolves once
the check passes again, in the transaction of the round that saw it pass. The alert
starts when the check began failing, and its name is the check's summary then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fieldline.alerts.body import Event
from fieldline.domain.health import Finding
from fieldline.notify.failing import alert_body, tell_channels
from fieldline.storage import health as health_store
from fieldline.storage.health import Conn, Failing

CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Raised:
    opened: int = 0
    resolved: int = 0


async def raise_and_resolve(
    conn: Conn, findings: Sequence[Finding], failing: Sequence[Failing], now: datetime
) -> Raised:
    """Inside the round's transaction: open the alerts of checks failing for their
    duration, resolve those of checks that pass again; notify both."""
    wait = {finding.key: finding.for_seconds for finding in findings}
    open_now = await health_store.open_system_alerts(conn)
    opened = resolved = 0
    for check in failing:
        held = (now - check.failing_since).total_seconds()
        if check.key in open_now or held < wait.get(check.key, 0):
            continue
        alert_id = await health_store.open_system_alert(conn, check)
        if alert_id is not None:
            alert, body = await alert_body(conn, alert_id, Event.FIRING, check.summary)
            await tell_channels(conn, alert, body, excluding=None)
            opened += 1
    still = {check.key for check in failing}
    for key, alert_id in sorted(open_now.items()):
        if key in still or not await health_store.resolve_system_alert(conn, alert_id, CLEARED):
            continue
        alert, body = await alert_body(conn, alert_id, Event.RESOLVED, "")
        body["summary"] = f"resolved: {alert.rule_name}"
        await tell_channels(conn, alert, body, excluding=None)
        resolved += 1
    return Raised(opened, resolved)
