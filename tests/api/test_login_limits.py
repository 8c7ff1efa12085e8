"""Passwords and API keys cannot be guessed without limit: past a limit per address or per
account every try gets 429 with Retry-After, before any hash is computed, and the audit
log records the lockout (once, not each try)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from fieldline.api import deps, device_auth
from fieldline.api.app import create_app
from fieldline.api.auth_limits import AddressFailures, AuthLimits, client_address
from fieldline.api.device_auth import VerifiedSecrets
from fieldline.api.routes import auth as auth_routes
from fieldline.runtime.http import HttpServer
from tests.api.conftest import ADMIN_PASSWORD, Api

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


class Clock:
    """The wall clock the per-account limit reads, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def set_limits(api: Api, *, per_account: int, per_address: int, clock: Clock | None = None) -> None:
    settings = api.context.settings.model_copy(
        update={
            "auth_max_failures_per_account": per_account,
            "auth_max_failures_per_address": per_address,
        }
    )
    limits = AuthLimits(settings, wall_clock=clock or (lambda: datetime.now(UTC)))
    api.use(dataclasses.replace(api.context.with_settings(settings), auth_limits=limits))


@pytest.fixture
def from_address(api: Api) -> Callable[[str], httpx.AsyncClient]:
    """A client of the same API whose requests come from `address`."""

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=api.app, client=(address, 40_000))
        return httpx.AsyncClient(transport=transport, base_url="http://fieldline")

    return client


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hash the API verifies (a spy: each call still runs)."""
    verified: list[str] = []
    for module in (auth_routes, deps, device_auth):
        real = module.verify_encoded

        def spy(encoded: str, secret: str, real: Any = real) -> bool:
            verified.append(encoded)
            return bool(real(encoded, secret))

        monkeypatch.setattr(module, "verify_encoded", spy)
    return verified


@dataclass
class Target:
    """An account someone may guess at, and a wrong and a right try of its secret."""

    kind: str  # as the audit log names it
    account: str
    wrong: Call
    right: Call


async def _user(api: Api, admin: dict[str, str]) -> Target:
    def login(password: str) -> Call:
        return lambda http: http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": password}
        )

    return Target("user", "admin", login("not-the-password"), login(ADMIN_PASSWORD))


async def _device(api: Api, admin: dict[str, str], path: str) -> Target:
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "pump-1"})
    password = created.json()["mqtt"]["password"]

    def send(secret: str) -> Call:
        auth = httpx.BasicAuth("pump-1", secret)
        return lambda http: http.post(f"/api/v1/devices/pump-1/{path}", json={"t": 1}, auth=auth)

    return Target("device", "pump-1", send("not-the-password"), send(password))


async def _api_key(api: Api, admin: dict[str, str]) -> Target:
    created = (await api.http.post("/api/v1/api-keys", headers=admin, json={"name": "k"})).json()
    key, key_id = created["api_key"], created["key_id"]

    def read(presented: str) -> Call:
        return lambda http: http.get("/api/v1/devices", headers={"X-API-Key": presented})

    return Target("api_key", key_id, read(key[:-4] + "abcd"), read(key))


TARGETS: dict[str, Callable[[Api, dict[str, str]], Awaitable[Target]]] = {
    "login": _user,
    "device-token": lambda api, admin: _device(api, admin, "token"),
    "device-basic-ingest": lambda api, admin: _device(api, admin, "telemetry"),
    "api-key": _api_key,
}


@pytest.fixture(params=list(TARGETS))
async def target(request: pytest.FixtureRequest, api: Api, admin: dict[str, str]) -> Target:
    return await TARGETS[request.param](api, admin)


def assert_refused(response: httpx.Response) -> int:
    """A 429 with a JSON error and Retry-After; answers Retry-After in seconds."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_failures"
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


async def lockouts(api: Api, admin: dict[str, str]) -> list[dict[str, Any]]:
    log = await api.http.get("/api/v1/audit", headers=admin, params={"action": "auth.lockout"})
    items: list[dict[str, Any]] = log.json()["items"]
    return items


async def test_past_the_address_limit_every_try_is_refused_before_any_hash(
    api: Api,
    admin: dict[str, str],
    target: Target,
    from_address: Callable[[str], httpx.AsyncClient],
    hashes: list[str],
) -> None:
    set_limits(api, per_account=1000, per_address=4)
    async with from_address("203.0.113.5") as guesser, from_address("198.51.100.7") as other:
        for _ in range(4):
            assert (await target.wrong(guesser)).status_code == 401
        computed = len(hashes)
        for _ in range(5):
            assert_refused(await target.wrong(guesser))
        assert_refused(await target.right(guesser))  # refused before the secret is looked at
        assert len(hashes) == computed  # no refused try cost a PBKDF2
        # The account is below its own limit: its owner elsewhere gets in.
        assert (await target.right(other)).status_code < 300

    [entry] = await lockouts(api, admin)  # one entry, however many tries were refused
    assert entry["actor"] == "address:203.0.113.5"
    assert (entry["target_type"], entry["target_id"]) == (target.kind, target.account)
    assert entry["detail"]["scope"] == "address"


async def test_an_account_is_locked_from_every_address_and_backs_off(
    api: Api,
    admin: dict[str, str],
    target: Target,
    from_address: Callable[[str], httpx.AsyncClient],
) -> None:
    clock = Clock()
    set_limits(api, per_account=3, per_address=1000, clock=clock)
    addresses = (f"192.0.2.{n}" for n in range(1, 100))

    async def fail_three_times() -> None:
        for _ in range(3):  # each from an address of its own: the account limit counts all
            async with from_address(next(addresses)) as http:
                assert (await target.wrong(http)).status_code == 401

    async def right_password() -> httpx.Response:
        async with from_address(next(addresses)) as http:
            return await target.right(http)

    await fail_three_times()
    assert assert_refused(await right_password()) == 60  # the first lock: a minute
    clock.advance(61)
    await fail_three_times()
    assert assert_refused(await right_password()) == 120  # the next one in a row: twice that
    clock.advance(121)
    assert (await right_password()).status_code < 300  # every lock ends
    await fail_three_times()
    async with from_address(next(addresses)) as http:
        assert assert_refused(await target.wrong(http)) == 60  # the success forgot the past

    entries = await lockouts(api, admin)
    assert len(entries) == 3
    for entry in entries:
        assert entry["actor"].startswith("address:192.0.2.")
        assert (entry["target_type"], entry["target_id"]) == (target.kind, target.account)
        assert entry["detail"]["scope"] == "account"
    assert [e["detail"]["retry_after_seconds"] for e in entries] == [60, 120, 60]


async def test_a_success_forgets_the_accounts_failures(
    api: Api, from_address: Callable[[str], httpx.AsyncClient]
) -> None:
    set_limits(api, per_account=3, per_address=1000)
    target = await _user(api, {})
    async with from_address("203.0.113.9") as guesser, from_address("198.51.100.9") as owner:
        for _ in range(2):
            assert (await target.wrong(guesser)).status_code == 401
        assert (await target.right(owner)).status_code == 200
        for _ in range(2):
            assert (await target.wrong(guesser)).status_code == 401  # counting starts again
        assert (await target.right(owner)).status_code == 200


async def test_a_device_in_use_keeps_working_while_its_password_is_guessed(
    api: Api, admin: dict[str, str], from_address: Callable[[str], httpx.AsyncClient]
) -> None:
    clock = Clock()
    set_limits(api, per_account=3, per_address=1000, clock=clock)
    target = await _device(api, admin, "telemetry")
    async with from_address("10.1.1.1") as device, from_address("203.0.113.66") as guesser:
        assert (await target.right(device)).status_code == 202
        for _ in range(3):
            assert (await target.wrong(guesser)).status_code == 401
        assert_refused(await target.wrong(guesser))
        # The device's own password matched a moment ago: no guess, so it is not refused.
        assert (await target.right(device)).status_code == 202

        # A minute later, forgotten.
        api.use(dataclasses.replace(api.context, device_secrets=VerifiedSecrets()))
        assert_refused(await target.right(device))  # now it waits for the lock like anyone
        clock.advance(61)
        assert (await target.right(device)).status_code == 202


@pytest.fixture
async def served(api: Api) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Serve the API over real HTTP (uvicorn), trusting the proxies given."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def serve(trusted_proxies: str) -> str:
        http = HttpServer(create_app(api.context), "127.0.0.1", 0, trusted_proxies=trusted_proxies)
        stopping = asyncio.Event()
        stops.append((stopping, asyncio.create_task(http.serve(stopping))))
        await http.wait_started()
        return f"http://127.0.0.1:{http.port}"

    yield serve
    for stopping, serving in stops:
        stopping.set()
        await asyncio.wait_for(serving, 30)


@pytest.mark.parametrize(("trusted", "believed"), [("", False), ("127.0.0.1", True)])
async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    api: Api, served: Callable[[str], Awaitable[str]], trusted: str, believed: bool
) -> None:
    set_limits(api, per_account=1000, per_address=2)
    url = await served(trusted)
    bad_key = {"X-API-Key": "fl_0123456789ab.wrong"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(2):
            sent = await http.get(
                "/api/v1/devices", headers={**bad_key, "X-Forwarded-For": "198.51.100.1"}
            )
            assert sent.status_code == 401
        other = await http.get(
            "/api/v1/devices", headers={**bad_key, "X-Forwarded-For": "198.51.100.2"}
        )
    # Believed, the header names another client with tries left; not believed, every
    # request is the socket's peer (127.0.0.1), which has used its two.
    assert other.status_code == (401 if believed else 429)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_gets_its_limit_at_once_then_one_try_per_interval() -> None:
    clock = Monotonic()
    limiter = AddressFailures(4, 60.0, clock=clock)  # 4 per minute: one per 15 s
    reported = [limiter.failed("a") for _ in range(4)]
    assert reported == [False, False, False, True]  # reported once, when used up
    assert limiter.blocked_for("a") == pytest.approx(15.0)
    assert limiter.blocked_for("b") is None
    clock.now += 15.0
    assert limiter.blocked_for("a") is None
    assert limiter.failed("a") is False  # blocked again, but already said so
    assert limiter.blocked_for("a") == pytest.approx(15.0)
    clock.now += 60.0
    assert [limiter.failed("a") for _ in range(4)][-1] is True  # a new episode


def test_an_address_flood_keeps_the_blocked_ones() -> None:
    clock = Monotonic()
    limiter = AddressFailures(2, 60.0, max_addresses=100, clock=clock)
    limiter.failed("guesser")
    limiter.failed("guesser")
    for n in range(1000):
        limiter.failed(f"passer-by-{n}")
        clock.now += 0.01
    assert limiter.blocked_for("guesser") is not None


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same subscriber
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("testclient", "testclient"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(peer: str, counted_as: str) -> None:
    request = Request({"type": "http", "client": (peer, 1234), "headers": []})
    assert client_address(request) == counted_as
