"""Real receivers for notifications: an HTTP server and SMTP servers (plain, STARTTLS, TLS),
each started by the test on a free loopback port; and the outbox rows a test needs,
inserted by SQL as the alert engine writes them (ALERTS14.md)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from fieldline.ops.sockets import free_port
from fieldline.security.certs import IssuedCertificates, issue_certificates
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from tests.api.conftest import admin, api  # noqa: F401  (the API in-process, as tests/api runs it)

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers `status` (with Retry-After
    `retry_after` when set); `stop()` takes it off the network, `start()` brings it back
    on the same port."""

    port: int = field(default_factory=lambda: free_port(HOST))
    status: int = 200
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                if status < 300:
                    with receiver._lock:
                        receiver.requests.append(Received(self.path, dict(self.headers), body))
                self.send_response(status)
                if receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((HOST, self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    opened = await open_pool(pg15_database_url, min_size=1, max_size=4)
    yield opened
    await opened.close()


@dataclass
class Mailbox:
    """What an SMTP server accepted: (envelope sender, recipients, parsed message)."""

    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.mails.append(
            (envelope.mail_from or "", list(envelope.rcpt_tos), message_from_bytes(content))
        )
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=data.password == b"smtp-password")
        return AuthResult(success=False)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    port: int
    mailbox: Mailbox


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificates:
    return issue_certificates(tmp_path_factory.mktemp("smtp-certs"), names=["127.0.0.1"])


@pytest.fixture
def trust_test_ca(certificates: IssuedCertificates, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The channel verifies the server with the system's CAs: here, the test's CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.files.ca_cert))
    return certificates.files.ca_cert


def _server_context(certificates: IssuedCertificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.files.server_cert, certificates.files.server_key)
    return context


@pytest.fixture(params=["none", "starttls", "tls"])
def smtp(
    request: pytest.FixtureRequest, certificates: IssuedCertificates
) -> Iterator[tuple[str, SmtpServer]]:
    """An aiosmtpd server of each security mode; STARTTLS and TLS ones take a login."""
    security: str = request.param
    mailbox = Mailbox()
    port = free_port(HOST)
    options: dict[str, Any] = {}
    if security == "starttls":
        options = {
            "tls_context": _server_context(certificates),
            "require_starttls": True,
            "authenticator": mailbox.authenticate,
            "auth_required": True,
        }
    elif security == "tls":
        options = {
            "ssl_context": _server_context(certificates),
            "authenticator": mailbox.authenticate,
            # aiosmtpd counts only STARTTLS as TLS: on an implicit-TLS port AUTH is offered
            # by saying TLS is not required (the test checks the login arrived).
            "auth_require_tls": False,
        }
    controller = Controller(mailbox, hostname=HOST, port=port, **options)
    controller.start()
    yield security, SmtpServer(port, mailbox)
    controller.stop()


def body(
    alert_id: int | None, event: str, *, summary: str = "temperature 9.3 > 8 on cold-1"
) -> dict[str, Any]:
    """A webhook body of SPEC §6, as the alert engine stores it."""
    return {
        "alert_id": alert_id,
        "kind": "rule",
        "state": "resolved" if event == "resolved" else "firing",
        "event": event,
        "rule": {"id": None, "name": "cold room warm"},
        "severity": "critical",
        "device_id": "cold-1",
        "metric": "temperature",
        "value": 9.3,
        "started_at": "2026-12-07T10:00:00+00:00",
        "resolved_at": None,
        "acknowledged_by": None,
        "note": None,
        "summary": summary,
        "sent_at": datetime.now(UTC).isoformat(),
    }


async def add_channel(pool: Pool, name: str, kind: str, config: dict[str, Any]) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO notification_channels (name, type, config) VALUES (%s, %s, %s)"
                " RETURNING id",
                (name, kind, json.dumps(config)),
            )
        ).fetchone()
    assert row is not None
    return int(row["id"])


async def add_alert(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO alerts (rule_name, severity, device_id, metric, started_at,"
                " started_value) VALUES ('cold room warm', 'critical', 'cold-1', 'temperature',"
                " now(), 9.3) RETURNING id"
            )
        ).fetchone()
    assert row is not None
    return int(row["id"])


async def enqueue(pool: Pool, alert_id: int, channel_ids: list[int], event: str) -> str:
    """One event of the alert to each channel, with its next idempotency key."""
    async with pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE alerts SET transitions = transitions + 1 WHERE id = %s"
                " RETURNING transitions",
                (alert_id,),
            )
        ).fetchone()
        assert row is not None
        key = f"alert-{alert_id}-{row['transitions']}"
        for channel_id in channel_ids:
            await conn.execute(
                "INSERT INTO notifications (alert_id, channel_id, event, idempotency_key, body)"
                " VALUES (%s, %s, %s, %s, %s)",
                (alert_id, channel_id, event, key, json.dumps(body(alert_id, event))),
            )
    return key
