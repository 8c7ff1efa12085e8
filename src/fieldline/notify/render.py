"""How channels that are read by people (chat, mail) show a webhook body."""

from __future__ import annotations

from typing import Any

# Discord embed colours: red, orange, blue; green once resolved.
SEVERITY_COLOURS = {"critical": 0xE5484D, "warning": 0xF5A524, "info": 0x3E8ED0}
RESOLVED_COLOUR = 0x30A46C

# The body's fields a person reads, in order, with their labels.
_DETAILS = (
    ("event", "Event"),
    ("state", "State"),
    ("severity", "Severity"),
    ("device_id", "Device"),
    ("metric", "Metric"),
    ("value", "Value"),
    ("started_at", "Started"),
    ("resolved_at", "Resolved"),
    ("acknowledged_by", "Acknowledged by"),
    ("note", "Note"),
    ("alert_id", "Alert"),
)


def summary(fields: dict[str, Any]) -> str:
    """The one human line every channel shows."""
    text = fields.get("summary")
    if isinstance(text, str) and text:
        return text
    rule = fields.get("rule")
    name = rule.get("name") if isinstance(rule, dict) else None
    return str(name or "fieldline notification")


def headline(fields: dict[str, Any]) -> str:
    """`[fieldline] <severity> <state>: <summary>`, the e-mail subject and chat title."""
    severity = fields.get("severity") or "info"
    state = fields.get("state") or fields.get("event") or "firing"
    if fields.get("event") == "test":
        state = "test"
    return f"[fieldline] {severity} {state}: {summary(fields)}"


def details(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of every field that has a value, rule name first."""
    rows: list[tuple[str, str]] = []
    rule = fields.get("rule")
    if isinstance(rule, dict) and rule.get("name"):
        rows.append(("Rule", str(rule["name"])))
    for key, label in _DETAILS:
        value = fields.get(key)
        if value is not None and value != "":
            rows.append((label, str(value)))
    return rows


def colour(fields: dict[str, Any]) -> int:
    if fields.get("state") == "resolved":
        return RESOLVED_COLOUR
    return SEVERITY_COLOURS.get(str(fields.get("severity")), SEVERITY_COLOURS["info"])
