"""The decoder over every payload form and every way a payload can be wrong (hypothesis).

Whatever the bytes, every uplink kind's decoder answers a value or a rejection
with a reason, never an exception; and whatever it accepts, PostgreSQL stores:
accepted samples go through the real writer into a real database and commit.
"""

from __future__ import annotations

import asyncio
import json
import math
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from fieldline.domain.commands import CommandResult, encode_json
from fieldline.domain.readings import Reading, Rejection, RejectReason, StatusReport, storable
from fieldline.ingest.decode import (
    EARLIEST_TIME,
    MAX_KEY_LENGTH,
    MAX_MAGNITUDE,
    DecodeLimits,
    decode_command_result,
    decode_status,
    decode_telemetry,
    reported_firmware,
)
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, Presence, write_batch
from tests.conftest import PgServer, create_devices

NOW = datetime.now(UTC).replace(microsecond=0)
# Larger than the default 64 KiB, so that huge arrays reach the checks past the size limit.
LIMITS = DecodeLimits(max_payload_bytes=1_000_000, max_future_skew=timedelta(minutes=5))
DEVICE = "dev-1"
COMMAND = "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f"

# -- strategies ----------------------------------------------------------------

# Characters that have broken, or could break, storage or display when they reach a name
# or a value: NUL, lone surrogates (JSON can spell them as \ud800), controls, bidi
# overrides and isolates, zero-width characters, separators, a BOM, astral characters.
_HOSTILE = [
    "\x00", "\ud800", "\udfff", "\udbff", "\x01", "\x1f", "\x7f", "\x85", "\n", "\t",
    "\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\u200d", "\u2060", "\ufeff",
    "\u2028", "\u00a0", " ", "\u00ad", "\U0001f600", "\U000e0001",
]  # fmt: skip
_chars = st.one_of(
    st.characters(exclude_categories=()),  # every code point, surrogates included
    st.sampled_from(_HOSTILE),
    st.sampled_from("abc_.-T0"),
)
texts = st.text(_chars, max_size=24)
names = st.one_of(texts, st.sampled_from(["t", "temp", "sensors", "timestamp", "", " "]))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=12,
)
timestamps = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**45),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda s: NOW.timestamp() + s),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda s: (NOW.timestamp() + s) * 1000),
    st.datetimes(timezones=st.sampled_from([UTC, None])).map(lambda d: d.isoformat()),
    st.sampled_from(["yesterday", "", "2026-13-01T00:00:00Z", "1e9", "\x00", "\ud800"]),
    texts,
    st.lists(st.integers(), max_size=2),
)
message_ids = st.one_of(
    st.none(), texts, st.integers(), st.booleans(), st.floats(), st.just(""), st.uuids().map(str)
)


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["message_id"] = draw(message_ids)
    if draw(st.booleans()):
        entry["timestamp"] = draw(timestamps)
    if draw(st.integers(0, 9)) == 0:
        entry["device_id"] = draw(st.sampled_from([DEVICE, "dev-2", 1, None]))
    if draw(st.booleans()):
        entry["sensors"] = draw(st.one_of(st.dictionaries(names, values, max_size=6), values))
    entry.update(draw(st.dictionaries(names, values, max_size=4)))
    if draw(st.booleans()):
        entry["firmware_version"] = draw(st.one_of(texts, values))
    return entry


documents = st.one_of(
    entries(),
    st.builds(
        lambda wrapper, readings: {**wrapper, "readings": readings},
        st.fixed_dictionaries({}, optional={"message_id": message_ids}),
        st.one_of(st.lists(entries(), max_size=5), values),
    ),
    st.lists(st.one_of(entries(), values), max_size=5),
    values,
)

# Mostly valid messages that push at the edges of what is valid: names in any script
# (astral, combining, private use, unassigned code points), values with controls and
# separators (fine in a value), extreme finite numbers, ids of any text. Most decode.
_name_chars = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))
plausible_names = st.one_of(
    st.text(_name_chars, min_size=1, max_size=MAX_KEY_LENGTH).filter(lambda n: not n.isspace()),
    st.sampled_from(["temperature", "rh", "battery_voltage"]),
)
plausible_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.lists(st.one_of(st.integers(), texts, st.floats()), max_size=3),
)
plausible_times = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=200).map(lambda s: NOW.timestamp() + s),
    st.integers(min_value=-(10**6), max_value=200).map(lambda s: int(NOW.timestamp() + s) * 1000),
    st.integers(min_value=-(10**6), max_value=200).map(
        lambda s: (NOW + timedelta(seconds=s)).isoformat()
    ),
)
plausible_entries = st.fixed_dictionaries(
    {"sensors": st.dictionaries(plausible_names, plausible_values, min_size=1, max_size=6)},
    optional={
        "message_id": st.one_of(texts, st.integers(), st.uuids().map(str)),
        "timestamp": plausible_times,
        "firmware_version": texts,
        "signal_strength": st.integers(-120, 0),
    },
)
plausible_documents = st.one_of(
    plausible_entries,
    st.lists(plausible_entries, min_size=1, max_size=4),
    st.builds(lambda r: {"readings": r}, st.lists(plausible_entries, min_size=1, max_size=4)),
)


def _json(document: Any) -> bytes:
    """JSON text as a device might send it: NaN and Infinity as tokens, surrogates as escapes."""
    return json.dumps(document, allow_nan=True).encode()


_WRONG_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"{", b"]", b'"', b"\\", b",,"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    payload = _json(draw(documents))
    cut = draw(st.integers(0, len(payload)))
    how = draw(st.sampled_from(["truncate", "insert", "replace"]))
    if how == "truncate":
        return payload[:cut]
    wrong = draw(st.one_of(st.sampled_from(_WRONG_BYTES), st.binary(min_size=1, max_size=4)))
    return payload[:cut] + wrong + payload[cut + (how == "replace") :]


# Forms generated documents rarely reach, written out.
_RAW = [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"readings": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
    b'{"t": ' + b"9" * 400 + b"}",
    b'{"t": -' + b"9" * 5_000 + b"}",
    b'{"t": 1' + b"0" * 20 + b"}",
    b'{"t": 1e400}',
    b'{"t": -1e400}',
    b'{"t": 1e-400}',
    b'{"t": NaN}',
    b'{"sensors": {"t": -Infinity}}',
    b'{"timestamp": Infinity, "t": 1}',
    b'{"timestamp": NaN, "t": 1}',
    b'{"timestamp": ' + b"9" * 30 + b', "t": 1}',
    b"[NaN, Infinity]",
    b'{"t": [1' + b"0" * 30 + b", NaN]}",
    b'{"t": ["\\ud800"]}',
    b'{"t": [' + b"[" * 300 + b"]" * 300 + b"]}",
    b'{"t": 1, "t": 2}',
    b'{"t": 1, "t": NaN}',
    b'{"message_id": "a", "message_id": "\\u0000", "t": 1}',
    b'{"sensors": {"\\ud800": 1}}',
    b'{"sensors": {"t\\u0000": 1}}',
    b'{"message_id": "\\u0000", "t": 1}',
    b'{"message_id": "\\udfff", "t": 1}',
    b'{"mode": "eco\\u0000", "t": 1}',
    b'{"firmware_version": "\\ud83d", "t": 1}',
    b'{"\\u202etemp": 1}',
    b'{"te\\u200bmp": 1}',
    b'{"\\ufefftemp": 1}',
    b'{"   ": 1}',
    b'{"": 1}',
    b'{"readings": [' + b'{"t": 1},' * 10_000 + b'{"t": 1}]}',
    b'{"t": [' + b"1," * 100_000 + b"1]}",
    b'{"status": "online", "\\u0000": "x"}',
    b'{"status": "online", "firmware_version": "v\\u0000"}',
    b'{"status": "online", "note": "\\udc00"}',
    b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": "\\ud800"}',
    b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": {"\\ud800": 1}}',
    b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": [1e400]}',
    b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": 1' + b"0" * 40
    + b"}",
    b"\xef\xbb\xbf{}",
    b"",
    b"null",
]  # fmt: skip

payloads = st.one_of(
    documents.map(_json),
    mutated(),
    st.binary(max_size=300),
    st.sampled_from(_RAW),
    st.builds(
        lambda command, status, result: _json(
            {"command_id": command, "status": status, "result": result}
        ),
        st.sampled_from([COMMAND, "nope", 7]),
        st.sampled_from(["succeeded", "failed", "online", "offline"]),
        values,
    ),
    st.builds(
        lambda status, rest: _json({"status": status, **rest}),
        st.sampled_from(["online", "offline", "sleeping"]),
        st.dictionaries(names, values, max_size=5),
    ),
)

# -- what an accepted outcome must be ------------------------------------------


def assert_name(name: str) -> None:
    assert 0 < len(name) <= MAX_KEY_LENGTH and not name.isspace(), name
    for char in name:
        assert unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}, name


def assert_storable_reading(reading: Reading) -> None:
    assert reading.metrics or reading.attributes
    assert reading.message_id is None or (reading.message_id and storable(reading.message_id))
    assert EARLIEST_TIME <= reading.time <= NOW + LIMITS.max_future_skew
    for name, value in reading.metrics.items():
        assert_name(name)
        assert math.isfinite(value) and abs(value) <= MAX_MAGNITUDE
    for name, text in reading.attributes.items():
        assert_name(name)
        assert storable(text), text


def assert_rejection(outcome: Rejection) -> None:
    assert isinstance(outcome.reason, RejectReason)
    assert isinstance(outcome.detail, str) and outcome.detail


def telemetry(payload: bytes) -> list[Reading] | Rejection:
    return decode_telemetry(payload, device_id=DEVICE, received_at=NOW, limits=LIMITS)


def status(payload: bytes) -> StatusReport | Rejection:
    return decode_status(payload, device_id=DEVICE, limits=LIMITS)


def command_result(payload: bytes) -> CommandResult | Rejection:
    return decode_command_result(payload, device_id=DEVICE, limits=LIMITS)


# -- pure properties: never an exception, always a reason -----------------------


@pytest.mark.parametrize("payload", _RAW, ids=range(len(_RAW)))
def test_every_hand_written_hostile_payload_is_decoded_or_rejected(payload: bytes) -> None:
    check_every_decoder(payload)


@settings(max_examples=1_000, deadline=None)
@given(payloads)
@example(b'{"sensors":{"\\ud800":1}}')
def test_any_bytes_are_decoded_or_rejected_with_a_reason(payload: bytes) -> None:
    check_every_decoder(payload)


def check_every_decoder(payload: bytes) -> None:
    outcome = telemetry(payload)
    if isinstance(outcome, Rejection):
        assert_rejection(outcome)
    else:
        assert outcome
        for reading in outcome:
            assert_storable_reading(reading)
    report = status(payload)
    if isinstance(report, Rejection):
        assert_rejection(report)
    else:
        for name, text in report.attributes.items():
            assert_name(name)
            assert storable(text)
        assert report.firmware_version is None or storable(report.firmware_version)
    answer = command_result(payload)
    if isinstance(answer, Rejection):
        assert_rejection(answer)
    else:
        assert isinstance(answer.command_id, UUID)
        assert storable(json.dumps(answer.result, ensure_ascii=False))


def test_the_poison_of_the_issue_is_refused_with_its_reason() -> None:
    for payload, reason in [
        (b'{"sensors":{"\\ud800":1}}', RejectReason.INVALID_NAME),
        (b'{"message_id": "a\\u0000", "t": 1}', RejectReason.INVALID_TEXT),
        (b'{"mode": "\\u0000", "t": 1}', RejectReason.INVALID_TEXT),
        (b'{"mode": "\\udc00", "t": 1}', RejectReason.INVALID_TEXT),
        (b'{"firmware_version": "v1\\u0000", "t": 1}', RejectReason.INVALID_TEXT),
        (b'{"t": ["\\ud800"]}', RejectReason.INVALID_TEXT),
        (b'{"\\u202etemp": 1}', RejectReason.INVALID_NAME),
        (b'{"\\u2066temp": 1}', RejectReason.INVALID_NAME),
        (b'{"te\\u200bmp": 1}', RejectReason.INVALID_NAME),
        (b'{"\\u2060t": 1}', RejectReason.INVALID_NAME),
        (b'{"\\ufefft": 1}', RejectReason.INVALID_NAME),
        (b'{"t\\n": 1}', RejectReason.INVALID_NAME),
        (b'{"sensors": {"  ": 1}}', RejectReason.INVALID_NAME),
        (b'{"sensors": {"\\u00a0": 1}}', RejectReason.INVALID_NAME),
        (b'{"t": 1' + b"0" * 400 + b"}", RejectReason.NON_FINITE_VALUE),
        (b'{"t": 1e300}', RejectReason.INVALID_PAYLOAD),  # an hour's sum would overflow
    ]:
        outcome = telemetry(payload)
        assert isinstance(outcome, Rejection), payload
        assert outcome.reason is reason, (payload, outcome)
    for payload in (
        b'{"status": "online", "x\\u0000": "1"}',
        b'{"status": "online", "firmware_version": "\\ud800"}',
    ):
        report = status(payload)
        assert isinstance(report, Rejection), payload
        assert report.reason in (RejectReason.INVALID_NAME, RejectReason.INVALID_TEXT)
    # Names in other scripts, with spaces inside, and astral characters are fine.
    [reading] = telemetry('{"température": 1, "湿度 %": 2, "☀ UV": 3, "mode": "é"}'.encode())
    assert set(reading.metrics) == {"température", "湿度 %", "☀ UV"}


# -- what decoding accepts, PostgreSQL stores ----------------------------------


@pytest.fixture(scope="module")
def store(pg15: PgServer) -> Iterator[StoreInto]:
    name = pg15.create_database()
    loop = asyncio.new_event_loop()
    try:
        target = loop.run_until_complete(StoreInto.open(pg15.url_for(name), loop))
        yield target
        loop.run_until_complete(target.conn.close())
    finally:
        loop.close()
        pg15.drop_database(name)


class StoreInto:
    """One connection to a migrated database, driven from synchronous hypothesis tests."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.partitions = PartitionCache()
        self.batches = 0

    @classmethod
    async def open(cls, url: str, loop: asyncio.AbstractEventLoop) -> StoreInto:
        await migrate(url)
        # Rows as the application's pool gives them (the registry reads columns by name).
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
        try:
            await create_devices(conn, DEVICE)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, loop)

    def write(self, batch: Batch) -> None:
        self.loop.run_until_complete(write_batch(self.conn, batch, self.partitions))
        self.batches += 1

    def jsonb(self, text: str) -> None:
        self.loop.run_until_complete(self.conn.execute("SELECT %s::jsonb", (text,)))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        plausible_documents.map(_json),
        plausible_documents.map(_json),
        documents.map(_json),
        st.sampled_from(_RAW),
        mutated(),
    )
)
@example(b'{"message_id": "m", "sensors": {"t": 1, "mode": "\\u00e9\\u2028x"}, "n": [1e300]}')
def test_what_decoding_accepts_the_writer_commits(store: StoreInto, payload: bytes) -> None:
    outcome = telemetry(payload)
    if not isinstance(outcome, Rejection):
        # Commits, or raises and fails the test: a batch PostgreSQL refuses is the defect.
        store.write(
            Batch(
                telemetry=[DeviceReadings(DEVICE, NOW, outcome)],
                presence=[Presence(DEVICE, NOW, firmware_version=reported_firmware(outcome))],
            )
        )
    report = status(payload)
    if not isinstance(report, Rejection):
        store.write(
            Batch(
                presence=[
                    Presence(
                        DEVICE,
                        NOW,
                        firmware_version=report.firmware_version,
                        attributes=report.attributes,
                        config_version=report.config_version,
                    )
                ]
            )
        )
    answer = command_result(payload)
    if not isinstance(answer, Rejection):
        store.jsonb(encode_json(answer.result))  # what the writer sends for the result column


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.one_of(plausible_names, names), values, max_size=6).map(
        lambda rest: {"status": "online", **rest}
    ),
    st.builds(lambda result: {"command_id": COMMAND, "status": "failed", "result": result}, values),
)
def test_accepted_status_and_command_results_are_storable(
    store: StoreInto, report: dict[str, Any], result: dict[str, Any]
) -> None:
    decoded = status(_json(report))
    if not isinstance(decoded, Rejection):
        store.write(
            Batch(
                presence=[
                    Presence(
                        DEVICE,
                        NOW,
                        firmware_version=decoded.firmware_version,
                        attributes=decoded.attributes,
                    )
                ]
            )
        )
    answer = command_result(_json(result))
    if not isinstance(answer, Rejection):
        store.jsonb(encode_json(answer.result))


def test_the_largest_values_accepted_add_up_in_an_hour_without_overflow(store: StoreInto) -> None:
    """Rollups sum an hour of a series in float8: values up to the bound must fit."""
    for sign in (1, 1, -1, 1):
        payload = _json(
            {"readings": [{"timestamp": NOW.timestamp(), "huge": sign * MAX_MAGNITUDE}] * 5_000}
        )
        outcome = telemetry(payload)
        assert not isinstance(outcome, Rejection), outcome
        store.write(Batch(telemetry=[DeviceReadings(DEVICE, NOW, outcome)]))
    too_large = telemetry(b'{"huge": 1e251}')
    assert isinstance(too_large, Rejection) and too_large.reason is RejectReason.INVALID_PAYLOAD
