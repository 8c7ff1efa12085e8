"""What one load of a dashboard page measured (`dashboard` scenario).

`Load` is a page load's record, in milliseconds from navigation start in the page's
clock: the in-page times (see `dashboard_pages.MEASURE`), the page's Resource Timing
entries, Chromium's Performance metrics of the tab, and the event streams, which have
no Resource Timing entry while they are open, from the DevTools protocol (`Network`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fieldline.bench.dashboard_pages import DashboardPage

# The counted loads of a repetition: a fresh browser context (cold), then the same
# page in a new tab of it (warm).
CASES = ("cold", "warm")


@dataclass
class Load:
    """One page load: milliseconds from navigation start, in the page's clock."""

    page: str
    cache: str  # "first" (the warm-up, not counted), "cold" or "warm"
    repetition: int
    dom_ms: float
    painted_ms: float
    html_request_ms: float  # the HTML document asked for (after the tab's own set-up)
    html_ms: float  # the HTML document received
    first_api_ms: float  # the first API request sent (the app's modules ran)
    last_asset_ms: float  # the last stylesheet or module received before render
    last_api_ms: float  # the last API answer received before render
    long_task_ms: float  # main-thread tasks over 50 ms, before the paint
    # Chromium's Performance metrics of the tab, from before navigation to just after
    # the paint: the renderer's main thread (its tasks' wall time, its CPU time, and
    # the script, style and layout in it) and the whole renderer process's CPU time.
    task_ms: float
    main_thread_cpu_ms: float
    script_ms: float
    style_layout_ms: float
    renderer_cpu_ms: float
    asset_requests: int  # the document, stylesheets, modules, icon
    api_requests: int  # completed before render; open event streams are not entries
    asset_bytes: int  # transferred: headers and body; 0 when served from the cache
    api_bytes: int
    shown: dict[str, Any]
    resources: list[dict[str, Any]] = field(default_factory=list)
    # The event stream the page opened (the overview needs its first event to render).
    stream_sent_ms: float | None = None
    stream_first_data_ms: float | None = None
    # The event streams the tab opened until it was measured, from Chromium's DevTools
    # protocol (Resource Timing has an entry only once a request ends), in ms from
    # navigation start: url, sent, first data read by the page.
    streams: list[dict[str, Any]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in entry.items()}


def is_api(url: str) -> bool:
    return urlsplit(url).path.startswith("/api/")


class Network:
    """A tab's requests as Chromium's DevTools protocol reports them (its monotonic clock)."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.document_timing: dict[str, Any] | None = None

    def sent(self, event: dict[str, Any]) -> None:
        self.requests.setdefault(
            event["requestId"], {"url": event["request"]["url"], "sent": event["timestamp"]}
        )

    def response(self, event: dict[str, Any]) -> None:
        if event["type"] == "Document" and self.document_timing is None:
            self.document_timing = event["response"].get("timing")

    def data(self, event: dict[str, Any]) -> None:
        request = self.requests.get(event["requestId"])
        if request is not None:
            request.setdefault("first_data", event["timestamp"])

    def finished(self, event: dict[str, Any]) -> None:
        request = self.requests.get(event["requestId"])
        if request is not None:
            request["finished"] = event["timestamp"]

    def relative(self, document_request_start: float) -> list[dict[str, Any]]:
        """The requests in ms from navigation start: the document's request was sent at
        `document_request_start` in the page's clock and at requestTime + sendStart in
        the protocol's."""
        if self.document_timing is None:
            return []
        timing = self.document_timing
        origin = 1000 * timing["requestTime"] + timing["sendStart"] - document_request_start
        return [
            {"url": request["url"]}
            | {
                key: round(1000 * request[key] - origin, 1)
                for key in ("sent", "first_data", "finished")
                if key in request
            }
            for request in self.requests.values()
        ]


def load_of(
    page: DashboardPage,
    cache: str,
    repetition: int,
    measured: dict[str, Any],
    network: Network,
    shown: dict[str, Any],
    console_errors: list[str],
) -> Load:
    painted = float(measured["painted"])
    metrics = measured["metrics"]
    navigation = measured["navigation"]
    resources = [entry for entry in measured["resources"] if entry["end"] <= painted]
    api = [entry for entry in resources if is_api(entry["name"])]
    assets = [entry for entry in resources if not is_api(entry["name"])]
    requests = network.relative(float(navigation["requestStart"]))
    streams = [r for r in requests if urlsplit(r["url"]).path.endswith("/stream")]
    stream = streams[0] if streams else {}
    return Load(
        page=page.name,
        cache=cache,
        repetition=repetition,
        dom_ms=round(float(measured["dom"]), 1),
        painted_ms=round(painted, 1),
        html_request_ms=round(float(navigation["requestStart"]), 1),
        html_ms=round(float(navigation["end"]), 1),
        first_api_ms=round(min((e["start"] for e in api), default=float("nan")), 1),
        last_asset_ms=round(max((e["end"] for e in assets), default=navigation["end"]), 1),
        last_api_ms=round(max((e["end"] for e in api), default=float("nan")), 1),
        long_task_ms=round(sum(d for start, d in measured["longTasks"] if start < painted), 1),
        task_ms=round(1000 * metrics["TaskDuration"], 1),
        main_thread_cpu_ms=round(1000 * metrics["ThreadTime"], 1),
        script_ms=round(1000 * metrics["ScriptDuration"], 1),
        style_layout_ms=round(
            1000 * (metrics["RecalcStyleDuration"] + metrics["LayoutDuration"]), 1
        ),
        renderer_cpu_ms=round(1000 * metrics["ProcessTime"], 1),
        asset_requests=1 + len(assets),
        api_requests=len(api),
        asset_bytes=int(navigation["transfer"]) + sum(int(e["transfer"]) for e in assets),
        api_bytes=sum(int(e["transfer"]) for e in api),
        shown=shown,
        resources=[_rounded(entry) for entry in [navigation, *measured["resources"]]],
        stream_sent_ms=stream.get("sent"),
        stream_first_data_ms=stream.get("first_data"),
        streams=streams,
        console_errors=console_errors,
    )
