"""The webhook body of SPEC §6: what every channel is sent about an alert's event.

Receivers code against it, so its keys never change; `summary` is the one human
line every channel shows (chat messages, e-mail subjects), in the metric's own terms
when its device type has metadata: its display name, and the value to its decimals
(or its label) with its unit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fieldline.domain.alerts import Condition, Lines, NoData, Offline, Threshold
from fieldline.domain.metrics import MetricMeta
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
    meta: MetricMeta | None = None,
) -> dict[str, Any]:
    """`meta`: what the alert's metric is for its device, when it has metadata."""
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
        "summary": summary(alert, event, condition, lines, meta),
        "sent_at": _instant(sent_at),
    }


def summary(
    alert: StoredAlert,
    event: Event,
    condition: Condition | None,
    lines: Lines | None,
    meta: MetricMeta | None = None,
) -> str:
    """e.g. `Temperature 9.3 °C > 8 °C for 600 s on cold-1` (`temperature 9.3 > 8 ...`
    without metadata), prefixed by what happened since."""
    what = _what(alert, condition, lines, meta)
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
            now = alert.resolved_value
            value = "" if now is None else f", now {_value(now, meta)}"
            return f"resolved ({alert.resolved_reason}{value}): {what}"


def _what(
    alert: StoredAlert, condition: Condition | None, lines: Lines | None, meta: MetricMeta | None
) -> str:
    device = alert.device_id
    match condition:
        case Threshold() if lines is not None and alert.started_value is not None:
            held = f" for {condition.for_seconds} s" if condition.for_seconds else ""
            unit = f" {meta.unit}" if meta is not None and meta.unit else ""
            return (
                f"{_name(condition.metric, meta)} {_value(alert.started_value, meta)}"
                f" {condition.op.value} {_line(lines.trip)}{unit}{held} on {device}"
            )
        case Offline(for_seconds):
            return f"{device} offline for {for_seconds} s"
        case NoData(metric, for_seconds):
            return f"no {_name(metric, meta)} from {device} for {for_seconds} s"
        case _:  # a channel alert, or a rule since deleted
            return alert.rule_name if device is None else f"{alert.rule_name} on {device}"


def _name(metric: str, meta: MetricMeta | None) -> str:
    return meta.display_name if meta is not None and meta.display_name else metric


def _value(value: float, meta: MetricMeta | None) -> str:
    """As the dashboard shows it: the value's label, else the number to the metric's
    decimals with its unit. A threshold is shown as the rule gives it, unrounded."""
    if meta is None:
        return _number(value)
    label = meta.label(value)
    if label is not None:
        return label
    number = _number(value) if meta.decimals is None else f"{value:.{meta.decimals}f}"
    return f"{number} {meta.unit}" if meta.unit else number


def _line(line: float | tuple[float, float]) -> str:
    if isinstance(line, tuple):
        return f"[{_number(line[0])}, {_number(line[1])}]"
    return _number(line)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()
