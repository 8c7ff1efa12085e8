"""The fuzz run's messages: good, duplicate and hostile uplinks, each with its expected fate.

Every message is built from a seeded random generator, so a run can be repeated,
and carries what fieldline must make of it: stored (with the readings and points
it adds), a duplicate (all its readings already stored), or rejected with a given
reason. The hostile ones cover every way a payload can be wrong that decoding
knows of: bytes that are not JSON or not UTF-8, nesting past any parser's limit,
numbers past float and 64-bit range, NaN and Infinity tokens, duplicate keys,
odd timestamps, text PostgreSQL cannot store (NUL, unpaired surrogates), names
that disguise themselves (controls, bidi overrides, zero-width characters).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STORED = "stored"
DUPLICATE = "duplicate"
REJECTED = "rejected"
TOO_LARGE_BYTES = 70_000  # over the default FIELDLINE_MAX_PAYLOAD_BYTES (64 KiB)
UNKNOWN_COMMAND = "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f"


@dataclass(frozen=True, slots=True)
class FuzzMessage:
    topic: str
    payload: bytes
    fate: str  # STORED, DUPLICATE or REJECTED
    reason: str = ""  # the rejection reason expected
    ids: tuple[str, ...] = ()  # message ids of the readings it stores (or repeats)
    readings: int = 0  # readings it stores (or repeats, for a duplicate)
    points: int = 0  # points it stores


@dataclass
class Expected:
    """What a whole run must come to, per message and per reading."""

    messages: int = 0
    stored: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    duplicate_readings: int = 0
    points: int = 0
    ids: set[tuple[str, str]] = field(default_factory=set)  # (device, message id) stored

    def add(self, device_id: str, message: FuzzMessage) -> None:
        self.messages += 1
        if message.fate == STORED:
            self.stored += 1
            self.readings += message.readings
            self.points += message.points
            self.ids.update((device_id, i) for i in message.ids)
        elif message.fate == DUPLICATE:
            self.duplicate += 1
            self.duplicate_readings += message.readings
        else:
            self.rejected[message.reason] = self.rejected.get(message.reason, 0) + 1


def _json(document: Any) -> bytes:
    """As a device might write it: NaN and Infinity as tokens, surrogates as escapes."""
    return json.dumps(document, allow_nan=True).encode()


# Hostile telemetry: (expected reason, builder of a payload from the generator and the
# device's own id and a time stamp now).
_Hostile = Callable[[random.Random, str, float], bytes]
_HOSTILE: list[tuple[str, _Hostile]] = [
    # Random bytes after one that is no UTF-8 start (nor a BOM, nor NUL: JSON's readers
    # guess UTF-16 from those), so never JSON whatever follows.
    ("invalid_json", lambda r, d, t: b"\x80" + bytes(r.randint(1, 255) for _ in range(64))),
    ("invalid_json", lambda r, d, t: b'{"t": "\xc3\x28", "n": 1}'),
    ("invalid_json", lambda r, d, t: b"temperature=21.5&humidity=40"),
    ("invalid_json", lambda r, d, t: b"[" * 10_000 + b"]" * 10_000),
    ("invalid_json", lambda r, d, t: b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
    ("invalid_json", lambda r, d, t: b'{"t": 1,}'),
    ("invalid_payload", lambda r, d, t: _json({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})),
    ("invalid_payload", lambda r, d, t: _json({"t": 1e300})),
    ("invalid_payload", lambda r, d, t: _json({"x" * 200: 1})),
    ("invalid_payload", lambda r, d, t: _json({"message_id": "", "t": 1})),
    ("invalid_payload", lambda r, d, t: _json({"readings": {"t": 1}})),
    ("invalid_payload", lambda r, d, t: b'"just text"'),
    ("invalid_payload", lambda r, d, t: b"[1, 2, 3]"),
    ("non_finite_value", lambda r, d, t: b'{"t": NaN}'),
    ("non_finite_value", lambda r, d, t: b'{"sensors": {"t": -Infinity}}'),
    ("non_finite_value", lambda r, d, t: b'{"t": 1e400}'),
    ("non_finite_value", lambda r, d, t: b'{"t": 1' + b"0" * r.randint(310, 4000) + b"}"),
    ("non_finite_value", lambda r, d, t: b'{"t": 1, "t": NaN}'),  # the last key wins
    ("invalid_name", lambda r, d, t: b'{"sensors":{"\\ud800":1}}'),
    ("invalid_name", lambda r, d, t: _json({"\u202etemp": 1})),
    ("invalid_name", lambda r, d, t: _json({"te\u200bmp": 1})),
    ("invalid_name", lambda r, d, t: _json({"\ufefftemp": 1})),
    ("invalid_name", lambda r, d, t: _json({"sensors": {"   ": 1}})),
    ("invalid_name", lambda r, d, t: _json({"t\n": 1})),
    ("invalid_text", lambda r, d, t: _json({"message_id": "m\x00", "t": 1})),
    ("invalid_text", lambda r, d, t: _json({"t": 1, "mode": "eco\x00"})),
    ("invalid_text", lambda r, d, t: _json({"t": 1, "firmware_version": "v\udbff"})),
    ("invalid_text", lambda r, d, t: _json({"t": ["\udc00"]})),
    ("future_timestamp", lambda r, d, t: _json({"timestamp": t + 86_400, "t": 1})),
    ("invalid_timestamp", lambda r, d, t: _json({"timestamp": 12_345, "t": 1})),
    ("invalid_timestamp", lambda r, d, t: _json({"timestamp": "yesterday", "t": 1})),
    ("invalid_timestamp", lambda r, d, t: _json({"timestamp": 1e300, "t": 1})),
    ("invalid_timestamp", lambda r, d, t: _json({"timestamp": True, "t": 1})),
    ("device_mismatch", lambda r, d, t: _json({"device_id": d + "-not", "t": 1})),
    ("no_readings", lambda r, d, t: _json({"readings": []})),
    ("no_readings", lambda r, d, t: _json({"message_id": "nothing"})),
    ("too_large", lambda r, d, t: _json({"t": 1, "pad": "x" * TOO_LARGE_BYTES})),
]  # fmt: skip

_STATUS_REJECTED: list[tuple[str, bytes]] = [
    ("invalid_payload", b'{"status": "sleeping"}'),
    ("invalid_text", b'{"status": "online", "note": "\\u0000"}'),
    ("invalid_name", b'{"status": "online", "\\u2066x": "1"}'),
    ("invalid_json", b"\xff\xfe"),
]
_RESULT_REJECTED: list[tuple[str, bytes]] = [
    # Well formed, for no command of this device: refused by the writer, at commit.
    ("unknown_command", _json({"command_id": UNKNOWN_COMMAND, "status": "succeeded"})),
    ("invalid_payload", _json({"command_id": UNKNOWN_COMMAND, "status": "failed",
                               "result": "\x00"})),
    ("invalid_payload", b'{"command_id": "' + UNKNOWN_COMMAND.encode() + b'", "status": "failed",'
     b' "result": "\\ud800"}'),
    ("invalid_payload", _json({"command_id": "not-a-uuid", "status": "failed"})),
]  # fmt: skip
# Names that are odd but fine: other scripts, spaces inside, astral characters.
_NAMES = ["temperature", "rh", "co2", "température", "湿度", "☀ uv", "battery.v", "α_β"]


class FuzzDevice:
    """One device's stream of messages, in the order it publishes them."""

    def __init__(self, device_id: str, run: str, rng: random.Random) -> None:
        self.device_id = device_id
        self._run = run
        self._rng = rng
        self._sequence = 0
        self._sent: list[FuzzMessage] = []  # stored messages with ids, to repeat

    def _topic(self, kind: str) -> str:
        return f"devices/{self.device_id}/{kind}"

    def next(self, now: float) -> FuzzMessage:
        self._sequence += 1
        draw = self._rng.random()
        if draw < 0.45:
            return self._good(now)
        if draw < 0.55 and self._sent:
            repeated = self._rng.choice(self._sent)
            return FuzzMessage(
                repeated.topic,
                repeated.payload,
                DUPLICATE,
                ids=repeated.ids,
                readings=repeated.readings,
            )
        if draw < 0.85:
            reason, build = self._rng.choice(_HOSTILE)
            return FuzzMessage(
                self._topic("telemetry"), build(self._rng, self.device_id, now), REJECTED, reason
            )
        return self._other(now)

    def _reading(self, now: float) -> tuple[dict[str, Any], int]:
        rng = self._rng
        metrics = {
            name: round(rng.uniform(-1e6, 1e6), 3) if rng.random() < 0.8 else rng.random() < 0.5
            for name in rng.sample(_NAMES, rng.randint(1, 5))
        }
        reading: dict[str, Any] = {"sensors": metrics, "seq": self._sequence}
        if rng.random() < 0.3:
            reading["mode"] = rng.choice(["eco", "boost", "line\nbreak", "tab\there", "😀"])
        if rng.random() < 0.2:
            reading["firmware_version"] = f"v1.{rng.randint(0, 9)}"
        if rng.random() < 0.7:
            form = rng.random()
            stamp = now - rng.uniform(0, 3600)
            reading["timestamp"] = (
                stamp if form < 0.4 else int(stamp * 1000) if form < 0.7 else _iso(stamp)
            )
        return reading, len(metrics) + 1  # + seq

    def _good(self, now: float) -> FuzzMessage:
        rng = self._rng
        base = f"{self._run}-{self.device_id}-{self._sequence}"
        if rng.random() < 0.7:  # one reading, with an id
            reading, points = self._reading(now)
            reading["message_id"] = base
            message = FuzzMessage(
                self._topic("telemetry"),
                _json(reading),
                STORED,
                ids=(base,),
                readings=1,
                points=points,
            )
        elif rng.random() < 0.8:  # a batch: a wrapper id, readings M#i; or a JSON array
            readings = [self._reading(now) for _ in range(rng.randint(2, 12))]
            ids = tuple(f"{base}#{i}" for i in range(len(readings)))
            document: Any = {"message_id": base, "readings": [r for r, _ in readings]}
            if rng.random() < 0.5:
                document = [{**r, "message_id": i} for (r, _), i in zip(readings, ids, strict=True)]
            message = FuzzMessage(
                self._topic("telemetry"),
                _json(document),
                STORED,
                ids=ids,
                readings=len(readings),
                points=sum(p for _, p in readings),
            )
        else:  # no id, no time: new at every delivery, stored once here
            reading, points = self._reading(now)
            reading.pop("timestamp", None)
            return FuzzMessage(
                self._topic("telemetry"), _json(reading), STORED, readings=1, points=points
            )
        self._sent.append(message)
        return message

    def _other(self, now: float) -> FuzzMessage:
        rng = self._rng
        draw = rng.random()
        if draw < 0.3:
            status = {"status": "online", "uptime_s": rng.randint(0, 10**6), "fw": "v1"}
            return FuzzMessage(self._topic("status"), _json(status), STORED)
        if draw < 0.5:
            return FuzzMessage(self._topic("heartbeat"), b"", STORED)
        if draw < 0.75:
            reason, payload = rng.choice(_STATUS_REJECTED)
            return FuzzMessage(self._topic("status"), payload, REJECTED, reason)
        reason, payload = rng.choice(_RESULT_REJECTED)
        return FuzzMessage(self._topic("commands/result"), payload, REJECTED, reason)


def _iso(stamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, tz=UTC).isoformat()
