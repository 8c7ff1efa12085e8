"""E-mail over SMTP: STARTTLS, implicit TLS or (on a trusted network) plain.

aiosmtplib rather than smtplib in a thread: it is asyncio end to end, so a slow mail
server holds no thread, and one timeout covers connect, TLS and every reply. The server's
certificate is verified against the system's CAs (SSL_CERT_FILE names a private CA).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from fieldline.notify import render
from fieldline.notify.base import SEND_TIMEOUT_SECONDS, Delivery, Notice, failed

Security = Literal["starttls", "tls", "none"]


def message(notice: Notice, *, sender: str, to: tuple[str, ...]) -> EmailMessage:
    fields = notice.fields()
    mail = EmailMessage()
    mail["Subject"] = render.headline(fields)
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    # Lets a mail client thread one alert's mails; a redelivery is recognisably the same.
    mail["X-Fieldline-Idempotency-Key"] = notice.idempotency_key
    lines = [render.summary(fields), ""]
    lines += [f"{label}: {value}" for label, value in render.details(fields)]
    mail.set_content("\n".join(lines) + "\n")
    return mail


@dataclass(frozen=True, slots=True)
class EmailChannel:
    host: str
    port: int
    security: Security
    sender: str
    to: tuple[str, ...]
    username: str | None = None
    password: str | None = None

    async def send(self, notice: Notice) -> Delivery:
        mail = message(notice, sender=self.sender, to=self.to)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=ssl.create_default_context() if self.security != "none" else None,
                timeout=SEND_TIMEOUT_SECONDS,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return failed(f"SMTP {exc.code}: {exc.message}", exc.code)
        except aiosmtplib.SMTPException as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        except (OSError, ssl.SSLError) as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        return Delivery(ok=True, status_code=250)
