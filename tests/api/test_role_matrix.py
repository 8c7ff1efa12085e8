"""Every HTTP operation enforces its role (SPEC §9), generated from the app's route table.

Each operation of the real app is called as each kind of caller: no credentials, an
expired token, a forged token, a refresh token used as an access token, a viewer, an
operator, an admin, an operator's API key, a device by HTTP Basic and by a device
token, and EMQX with its webhook secret. What each operation needs is read from its
own dependencies (`RoleCheck` and the few authentication dependencies below), not from
a list of routes: a new route is checked as soon as it exists, and one with no
authentication at all fails unless it is in PUBLIC with the reason why.

Authentication runs before the body is validated (FastAPI solves dependencies first
and reports body errors after), so `{}` as the body is enough: an operation the
caller may use answers anything but 401/403 (often 404 for the absent resources the
paths name, or 422 for the empty body), and nothing is changed or deleted.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr

from fieldline.api import deps, device_auth
from fieldline.api.app import create_app
from fieldline.api.deps import RoleCheck
from fieldline.api.routes import auth, emqx
from fieldline.api.tokens import TokenIssuer, TokenKind
from fieldline.domain.users import Role
from tests.api.conftest import Api
from tests.conftest import FaultReport

# Operations anyone may call, each with the reason. Keep it short.
PUBLIC = {
    "/health": "liveness probe for the ops network (SPEC §7); says nothing but ok",
    "/ready": "readiness probe for load balancers (SPEC §7); says which part is down",
    "/metrics": "Prometheus scrapes it unauthenticated (SPEC §7); counts, no data",
    "/provision": "zero-touch provisioning: the handler checks the key's HMAC signature",
    "/api/v1/auth/login": "where a token is obtained",
    "/api/v1/auth/refresh": "authenticated by the refresh token in its body",
    "/": "the dashboard's page, which signs in through the API",
    "/ui": "the dashboard's static files (and a redirect to /)",
    "/docs": "the API's documentation page (served without internet access)",
    "/docs/assets": "Swagger UI's static files and the page's own script",
    "/openapi.json": "the API's description; no data",
    "/api/v1/firmware/keys": "public keys devices verify firmware with; published on purpose",
}


class Needs(Enum):
    VIEWER = Role.VIEWER
    OPERATOR = Role.OPERATOR
    ADMIN = Role.ADMIN
    DEVICE = "device"  # its password (HTTP Basic) or a device token
    DEVICE_PASSWORD = "device password"  # HTTP Basic only
    EMQX = "emqx"


# The dependencies that authenticate a caller without naming a role of their own.
SIGNED_IN = (deps.get_caller, deps.get_stream_viewer, auth.sign_out_request)
DEVICE_AUTH = {
    device_auth.basic_device: Needs.DEVICE_PASSWORD,
    device_auth.authenticated_device: Needs.DEVICE,
    device_auth.any_device: Needs.DEVICE,
}
EMQX_AUTH = (emqx._check_caller,)
RANK = {Needs.VIEWER: 0, Needs.OPERATOR: 1, Needs.ADMIN: 2}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def needs_of(dependant: Dependant) -> Needs | None:
    """What an operation's dependencies demand of its caller; None: nothing."""
    found: set[Needs] = set()
    for call in _calls(dependant):
        if isinstance(call, RoleCheck):
            found.add(Needs(call.role))
        elif call in SIGNED_IN:
            found.add(Needs.VIEWER)
        elif call in DEVICE_AUTH:
            found.add(DEVICE_AUTH[call])
        elif call in EMQX_AUTH:
            found.add(Needs.EMQX)
    roles = {n for n in found if n in RANK}
    others = found - roles
    assert len(others) + bool(roles) <= 1, f"mixed authentication: {found}"
    if others:
        return others.pop()
    return max(roles, key=RANK.__getitem__) if roles else None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    needs: Needs


def operations(app: Any) -> tuple[list[Operation], set[str]]:
    """Every protected operation of the app, and the paths of the unprotected ones."""
    protected, public = [], set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            public.add(route.path)  # documentation pages and the static files' mount
            continue
        needs = needs_of(context.dependant)
        if needs is None:
            public.add(context.path)
            continue
        assert context.path not in PUBLIC, f"{context.path} is listed public but needs {needs}"
        protected += [Operation(m, context.path, needs) for m in sorted(context.methods)]
    return protected, public


MATRIX_DEVICE = "matrix-device"


def concrete(operation: Operation) -> str:
    """The path with valid parameters naming nothing that exists, except the device
    whose credentials the device kinds carry, on device operations."""
    values = {
        "device_id": MATRIX_DEVICE if operation.needs in DEVICE_AUTH.values() else "matrix-absent",
        "user_id": "999999",
        "alert_id": "999999",
        "channel_id": "999999",
        "key_id": "absent-key",
        "command_id": str(uuid.uuid4()),
        "name": "absent-group",
        "rule_id": "999999",
        "silence_id": "999999",
        "device_type": "absent-type",
        "metric": "absent-metric",
        "device_model": "absent-model",
        "version": "1.0.0",
        "rollout_id": "999999",
    }
    path = operation.path
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no test value for a parameter of {operation.path}"
    return path


@dataclass(frozen=True)
class Kind:
    name: str
    headers: Callable[[], dict[str, str]]  # called per request: fresh sessions each time
    satisfies: frozenset[Needs] = frozenset()  # empty: not authenticated at all

    def may(self, needs: Needs) -> bool:
        return needs in self.satisfies

    @property
    def is_user(self) -> bool:
        return any(need in RANK for need in self.satisfies)


def _user(role: Needs) -> frozenset[Needs]:
    return frozenset(need for need in RANK if RANK[need] <= RANK[role])


@pytest.fixture
async def kinds(api: Api, admin: dict[str, str]) -> list[Kind]:
    secret = "emqx-webhook-secret-for-the-matrix"
    api.reconfigure(emqx_webhook_secret=SecretStr(secret))
    context = api.context
    users = {}
    for role in Role:
        created = await api.http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": f"matrix-{role.value}", "password": "a-long-password", "role": role},
        )
        users[role] = created.json()["id"]

    def token_of(
        kind: TokenKind, role: Role, secret_key: str = context.secret_key, minutes: int = 15
    ) -> Callable[[], dict[str, str]]:
        """A new session's token for each request, so that no request (a sign-out
        wrongly let through, say) can change what the next one is checked with."""
        minted = TokenIssuer(
            secret_key=secret_key,
            access_ttl=timedelta(minutes=minutes),
            refresh_ttl=timedelta(days=1),
        )

        def headers() -> dict[str, str]:
            token = minted.issue(kind, user_id=users[role], version=0, session_id=uuid.uuid4().hex)
            return {"Authorization": f"Bearer {token}"}

        return headers

    def signed_in(role: Role) -> Callable[[], dict[str, str]]:
        return token_of(TokenKind.ACCESS, role)

    def bearer(token: str) -> Callable[[], dict[str, str]]:
        return lambda: {"Authorization": f"Bearer {token}"}

    expired = token_of(TokenKind.ACCESS, Role.ADMIN, minutes=-1)
    forged = token_of(TokenKind.ACCESS, Role.ADMIN, "another-key-not-this-servers-" * 2)
    refresh = token_of(TokenKind.REFRESH, Role.ADMIN)

    operator = signed_in(Role.OPERATOR)()
    key = await api.http.post("/api/v1/api-keys", headers=operator, json={"name": "matrix"})
    device = await api.http.post(
        "/api/v1/devices", headers=admin, json={"device_id": MATRIX_DEVICE}
    )
    password = device.json()["mqtt"]["password"]
    basic = "Basic " + base64.b64encode(f"{MATRIX_DEVICE}:{password}".encode()).decode()
    token = await api.http.post(
        f"/api/v1/devices/{MATRIX_DEVICE}/token", auth=(MATRIX_DEVICE, password)
    )
    return [
        Kind("no credentials", dict),
        Kind("expired token", expired),
        Kind("forged token", forged),
        Kind("refresh token", refresh),
        Kind("viewer", signed_in(Role.VIEWER), _user(Needs.VIEWER)),
        Kind("operator", signed_in(Role.OPERATOR), _user(Needs.OPERATOR)),
        Kind("admin", signed_in(Role.ADMIN), _user(Needs.ADMIN)),
        Kind(
            "operator's API key",
            lambda: {"X-API-Key": key.json()["api_key"]},
            _user(Needs.OPERATOR),
        ),
        Kind(
            "device by Basic",
            lambda: {"Authorization": basic},
            frozenset({Needs.DEVICE, Needs.DEVICE_PASSWORD}),
        ),
        Kind("device token", bearer(token.json()["access_token"]), frozenset({Needs.DEVICE})),
        Kind("EMQX", bearer(secret), frozenset({Needs.EMQX})),
    ]


async def test_every_operation_answers_as_its_role_says(
    api: Api, kinds: list[Kind], fault_report: FaultReport
) -> None:
    app = create_app(api.context)
    protected, public = operations(app)
    assert public <= PUBLIC.keys(), (
        f"operations without authentication: {sorted(public - PUBLIC.keys())}; protect them"
        " or add them to PUBLIC with the reason"
    )
    assert PUBLIC.keys() <= public, f"stale PUBLIC entries: {sorted(PUBLIC.keys() - public)}"
    assert len(protected) > 40  # the table was read, not skipped
    # Event streams end at once instead of streaming for ever (as when the server stops).
    api.context.closing.set()

    wrong = []
    requests = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        for operation in protected:
            path = concrete(operation)
            body = {} if operation.method in ("POST", "PUT", "PATCH") else None
            for kind in kinds:
                response = await http.request(
                    operation.method, path, headers=kind.headers(), json=body
                )
                requests += 1
                status = response.status_code
                if kind.may(operation.needs):
                    ok = status not in (401, 403) and status < 500
                    expected = "not 401/403"
                else:
                    expected_status = 401 if _unauthenticated(kind, operation) else 403
                    ok = status == expected_status and _json_error(response)
                    expected = str(expected_status)
                if not ok:
                    wrong.append(
                        f"{operation.method} {operation.path} ({operation.needs.name.lower()})"
                        f" as {kind.name}: {status}, expected {expected}"
                    )
    fault_report.append(
        f"role matrix: {len(protected)} protected operations x {len(kinds)} callers,"
        f" {requests} requests, {len(wrong)} answered against their role"
    )
    assert not wrong, "\n".join(wrong)


def _unauthenticated(kind: Kind, operation: Operation) -> bool:
    """401 rather than 403: the caller is not one this operation authenticates at all
    (403 is for a user whose role is too low)."""
    return not (kind.is_user and operation.needs in RANK)


def _json_error(response: httpx.Response) -> bool:
    try:
        return bool(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return False
