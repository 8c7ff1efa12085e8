"""The long tail (Telegram, ntfy, Microsoft Teams, Pushover, ...) through Apprise.

Apprise is synchronous: each send runs in a thread. It is imported only here, when a
channel of this type is built, so processes that never send pay nothing for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fieldline.notify import render
from fieldline.notify.base import SEND_TIMEOUT_SECONDS, Delivery, Notice, failed


def supported(url: str) -> bool:
    """Whether Apprise knows how to send to `url` (its scheme and form)."""
    import apprise

    return bool(apprise.Apprise().add(url))


@dataclass(frozen=True, slots=True)
class AppriseChannel:
    url: str

    async def send(self, notice: Notice) -> Delivery:
        fields = notice.fields()
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                return await asyncio.to_thread(self._send, fields)
        except TimeoutError:
            return failed(f"timed out after {SEND_TIMEOUT_SECONDS:g} s")

    def _send(self, fields: dict[str, Any]) -> Delivery:
        import apprise

        sender = apprise.Apprise()
        if not sender.add(self.url):
            return failed("Apprise does not support this URL")
        problems: list[str] = []

        def collect(entry: Any, _plugin: Any) -> None:
            if entry.level in {"WARNING", "ERROR", "CRITICAL"}:
                problems.append(str(entry.message))

        body = "\n".join(
            [render.summary(fields), ""]
            + [f"{label}: {value}" for label, value in render.details(fields)]
        )
        notify_type = (
            apprise.NotifyType.SUCCESS
            if fields.get("state") == "resolved"
            else apprise.NotifyType.FAILURE
            if fields.get("severity") == "critical"
            else apprise.NotifyType.WARNING
            if fields.get("severity") == "warning"
            else apprise.NotifyType.INFO
        )
        result = sender.notify(
            body=body,
            title=render.headline(fields),
            notify_type=notify_type,
            log_callback=collect,
        )
        if result:
            return Delivery(ok=True)
        return failed("; ".join(problems[-3:]) or "Apprise could not deliver")
