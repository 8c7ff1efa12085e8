"""The webhook body of SPEC §6: what every channel is sent about an alert's event.

Receivers code against it, so its keys never change; `summary` is the one human
line every channel shows (chat messages, e-mail subjects).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fieldline.domain.alerts import Condition, Lines, NoData, Offline, Threshold
from fieldline.storage.alerts import StoredAlert


class Event(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    ESCALATION = "escalation"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def idempotency_key(alert: StoredAlert) -> str:
    """The same for every channel of one event; `transitions` numbers the alert's events."""
    return f"alert-{alert.id}-{alert.transitions}"


def webhook_body(
    alert: StoredAlert,
    event: Event,
    *,
    condition: Condition | None,
    lines: Lines | None,
    sent_at: datetime,
) -> dict[str, Any]:
    closing = event is Event.RESOLVED
    return {
        "alert_id": alert.id,
        "kind": alert.kind,
        "state": alert.state,
        "event": str(event),
        "rule": {"id": alert.rule_id, "name": alert.rule_name},
        "severity": alert.severity,
        "device_id": alert.device_id,
        "metric": alert.metric,
        "value": alert.resolved_value if closing else alert.started_value,
        "started_at": _instant(alert.started_at),
        "resolved_at": _instant(alert.resolved_at),
        "acknowledged_by": alert.acknowledged_by,
        "note": alert.ack_note,
        "summary": summary(alert, event, condition, lines),
        "sent_at": _instant(sent_at),
    }


def summary(
    alert: StoredAlert, event: Event, condition: Condition | None, lines: Lines | None
) -> str:
    """e.g. `temperature 9.3 > 8 for 600 s on cold-1`, prefixed by what happened since."""
    what = _what(alert, condition, lines)
    match event:
        case Event.FIRING:
            return what
        case Event.REPEAT:
            return f"still firing: {what}"
        case Event.ESCALATION:
            return f"not acknowledged: {what}"
        case Event.ACKNOWLEDGED:
            note = f" ({alert.ack_note})" if alert.ack_note else ""
            return f"acknowledged by {alert.acknowledged_by}{note}: {what}"
        case Event.RESOLVED:
            value = "" if alert.resolved_value is None else f", now {_number(alert.resolved_value)}"
            return f"resolved ({alert.resolved_reason}{value}): {what}"


def _what(alert: StoredAlert, condition: Condition | None, lines: Lines | None) -> str:
    device = alert.device_id
    match condition:
        case Threshold() if lines is not None and alert.started_value is not None:
            held = f" for {condition.for_seconds} s" if condition.for_seconds else ""
            return (
                f"{condition.metric} {_number(alert.started_value)} {condition.op.value}"
                f" {_line(lines.trip)}{held} on {device}"
            )
        case Offline(for_seconds):
            return f"{device} offline for {for_seconds} s"
        case NoData(metric, for_seconds):
            return f"no {metric} from {device} for {for_seconds} s"
        case _:  # a channel alert, or a rule since deleted
            return alert.rule_name if device is None else f"{alert.rule_name} on {device}"


def _line(line: float | tuple[float, float]) -> str:
    if isinstance(line, tuple):
        return f"[{_number(line[0])}, {_number(line[1])}]"
    return _number(line)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()
