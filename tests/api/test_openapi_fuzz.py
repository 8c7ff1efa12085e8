"""Requests generated from the OpenAPI document, against a real `fieldline up` (issue 12).

Every operation, as an admin and as a viewer, with valid (positive) and invalid
(negative) input that schemathesis generates, half of it aimed at rows that exist
(seeded devices, groups, commands, users, keys): no answer may be a 5xx, and every
answer must be one the document declares, with the declared content type, headers
and body schema.

Sized for the suite (OPENAPI_FUZZ_EXAMPLES per operation and role, 15 by default, the
same examples on every run);
`scripts/openapi-fuzz` runs it longer and docs/security.md records its counts.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from tests.api.conftest import platform_on_pg15
from tests.conftest import FaultReport, PgServer
from tests.e2e.conftest import Platform

EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "15"))
ONLY = os.environ.get("OPENAPI_FUZZ_PATHS", "")  # a regular expression, to look closer
# The suite's run is the same on every machine; a longer run explores (random seeds).
DERANDOMIZE = "OPENAPI_FUZZ_EXAMPLES" not in os.environ
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
# A long run outlasts the default 15 minutes of an access token.
ENV = {"FIELDLINE_BROKER": "amqtt", "FIELDLINE_ACCESS_TOKEN_MINUTES": "600"}
FRAMING = ("Content-Length", "Transfer-Encoding", "Host", "Connection")
# Server-sent events last as long as the token they were opened with: no answer ends.
# tests/api/test_streams.py covers them.
ENDLESS = {"/api/v1/devices/{device_id}/stream", "/api/v1/fleet/stream"}
# Operations that can end the caller's sessions (a sign-out, everywhere too, or a password
# change): sent as another user of the same role with an API key, which outlives both, so
# the rest of the run keeps its own session.
SESSION_ENDING = {"/api/v1/auth/logout", "/api/v1/auth/password"}


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    cut_short: int = 0  # operations whose generation hypothesis stopped early


@dataclass
class Seed:
    """Rows the generated requests can hit, by path parameter name (and path, where the
    same name means different things)."""

    admin: dict[str, str]
    viewer: dict[str, str]
    protected_users: set[int]
    # Per role, the API key of a user of its own for SESSION_ENDING operations.
    signing_out: dict[str, dict[str, str]] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    by_path: dict[tuple[str, str], str] = field(default_factory=dict)

    def value(self, path: str, name: str) -> str | None:
        return self.by_path.get((path, name), self.by_name.get(name))


@pytest.fixture(scope="module")
def platform(pg15: PgServer) -> Iterator[Platform]:
    with platform_on_pg15(pg15, "openapi-fuzz", ENV) as running:
        yield running


@pytest.fixture(scope="module")
def seed(platform: Platform) -> Seed:
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as http:
        viewer_password = "fuzz-viewer-password"
        viewer = _ok(
            http.post(
                "/api/v1/users",
                json={"username": "fuzz-viewer", "password": viewer_password, "role": "viewer"},
            )
        )
        victim = _ok(
            http.post(
                "/api/v1/users",
                json={"username": "fuzz-victim", "password": "a-long-password", "role": "viewer"},
            )
        )
        me = _ok(http.get("/api/v1/auth/me"))
        token = _ok(
            http.post(
                "/api/v1/auth/login",
                json={"username": "fuzz-viewer", "password": viewer_password},
            )
        )["access_token"]
        found = Seed(
            admin=dict(platform.headers),
            viewer={"Authorization": f"Bearer {token}"},
            protected_users={int(me["id"]), int(viewer["id"])},
        )
        found.by_name["user_id"] = str(victim["id"])
        for role in ("admin", "viewer"):
            found.signing_out[role] = _user_with_api_key(http, f"fuzz-sign-out-{role}", role)
            found.protected_users.add(
                int(_ok(http.get("/api/v1/auth/me", headers=found.signing_out[role]))["id"])
            )
        _seed_rows(http, found)
    return found


def _user_with_api_key(http: httpx.Client, username: str, role: str) -> dict[str, str]:
    password = f"{username}-password"
    _ok(http.post("/api/v1/users", json={"username": username, "password": password, "role": role}))
    login = _ok(http.post("/api/v1/auth/login", json={"username": username, "password": password}))
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    key = _ok(http.post("/api/v1/api-keys", json={"name": "fuzz"}, headers=bearer))
    return {"X-API-Key": key["api_key"]}


def _seed_rows(http: httpx.Client, found: Seed) -> None:
    _ok(http.post("/api/v1/groups", json={"name": "fuzz-site"}))
    _ok(http.put("/api/v1/groups/fuzz-site/config", json={"config": {"interval_s": 30}}))
    device = _ok(
        http.post(
            "/api/v1/devices",
            json={"device_id": "fuzz-1", "group": "fuzz-site", "metadata": {"site": "a"}},
        )
    )
    auth = ("fuzz-1", device["mqtt"]["password"])
    for body in (b'{"temperature": 21.5, "firmware_version": "1.0"}', b"not json"):
        http.post("/api/v1/devices/fuzz-1/telemetry", content=body, auth=auth)
    _ok(http.put("/api/v1/devices/fuzz-1/config", json={"config": {"led": True}}))
    command = _ok(http.post("/api/v1/devices/fuzz-1/commands", json={"name": "reboot"}))
    key = _ok(http.post("/api/v1/provisioning-keys", json={"name": "fuzz-key"}))
    api_key = _ok(http.post("/api/v1/api-keys", json={"name": "fuzz-api-key"}))
    found.by_name.update(
        device_id="fuzz-1", name="fuzz-site", command_id=str(command["command_id"])
    )
    found.by_path[("/api/v1/provisioning-keys/{key_id}", "key_id")] = str(key["key_id"])
    found.by_path[("/api/v1/api-keys/{key_id}", "key_id")] = str(api_key["key_id"])


def _ok(answer: httpx.Response) -> Any:
    assert answer.status_code in (200, 201, 202), f"{answer.request.url}: {answer.text}"
    return answer.json()


def _restore(platform: Platform) -> None:
    """Put back what an admin's generated DELETE may have removed."""
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as http:
        if http.get("/api/v1/devices/fuzz-1").status_code == 404:
            http.post("/api/v1/devices", json={"device_id": "fuzz-1", "group": "fuzz-site"})


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    platform: Platform, seed: Seed, fault_report: FaultReport
) -> None:
    """As an admin; tests/api/test_openapi_fuzz_viewer.py does the same as a viewer, in a
    file of its own so that the two longest runs of the suite go side by side."""
    fuzz_every_operation(platform, seed, "admin", fault_report)


def fuzz_every_operation(
    platform: Platform, seed: Seed, role: str, fault_report: FaultReport
) -> None:
    schema = schemathesis.openapi.from_url(f"{platform.api_url}/openapi.json")
    headers = seed.admin if role == "admin" else seed.viewer
    tally = Tally()
    failures: dict[tuple[str, str], str] = {}
    operations = 0
    started = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in ENDLESS or not re.search(ONLY, operation.path):
                continue
            operations += 1
            _restore(platform)
            caller = seed.signing_out[role] if operation.path in SESSION_ENDING else headers
            failure = _fuzz(operation, platform.api_url, session, caller, seed, tally)
            if failure is None and not _still_signed_in(platform.api_url, headers):
                # Every later answer would be a 401, which the checks accept.
                failure = "the run's own session no longer works after this operation"
            if failure is not None:  # noted; on with the others
                failures[(operation.method.upper(), operation.path)] = failure
    fault_report.append(
        f"OpenAPI fuzz as {role}: {operations} operations, {tally.statuses.total()}"
        f" requests in {time.monotonic() - started:.0f} s,"
        f" answers {dict(sorted(tally.statuses.items()))}, {len(failures)} operations"
        f" failing, {tally.cut_short} cut short by inconsistent generation"
    )
    assert not failures, "\n\n".join(f"{m} {p}: {text}" for (m, p), text in failures.items())


def _still_signed_in(base_url: str, headers: dict[str, str]) -> bool:
    return httpx.get(f"{base_url}/api/v1/auth/me", headers=headers, timeout=30).is_success


def _fuzz(
    operation: APIOperation,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    seed: Seed,
    tally: Tally,
) -> str | None:
    """Run the operation's generated requests; answer the first failure, if any."""
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )
    failed: list[str] = []

    # No shrinking: a shrunk case is sent again to a server whose rows the earlier cases
    # changed, which may answer differently; the first failure is reported as it happened.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(case=cases, aimed=st.booleans())
    def run(case: Case, aimed: bool) -> None:
        _aim(case, seed, aimed=aimed)
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseExceptionGroup as exc:
            failed.append(str(exc))
            raise

    try:
        run()
    except FlakyStrategyDefinition:
        if failed:
            return failed[0]
        # Hypothesis found schemathesis' generation inconsistent and stopped early: nothing
        # the API answered was wrong. Counted, so that the summary says so.
        tally.cut_short += 1
    except (Exception, BaseExceptionGroup) as exc:
        # Hypothesis replays the failing case to report it, and may then call it flaky (the
        # server's rows changed meanwhile): the failure is the one first seen.
        return failed[0] if failed else f"{type(exc).__name__}: {exc}"
    return None


def _aim(case: Case, seed: Seed, *, aimed: bool) -> None:
    """Aim at a seeded row; never at the fuzz's own users (an admin could demote itself).

    Credentials generated from the security schemes go: the request is made as the role
    (tests/api/test_auth_and_roles.py tries every operation with every kind of credential).
    So do generated framing headers: a malformed Content-Length is refused by uvicorn's
    HTTP parser (400, text/plain) before fieldline sees a request.
    """
    for header in ("Authorization", "X-API-Key", *FRAMING):
        (case.headers or {}).pop(header, None)
    parameters = case.path_parameters or {}
    for name, value in parameters.items():
        target = seed.value(case.operation.path, name)
        protected = name == "user_id" and _as_int(value) in seed.protected_users
        if target is not None and (aimed or protected):
            parameters[name] = target


def _as_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
