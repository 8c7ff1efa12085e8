// The notifications log: every notification the outbox holds, its status, how many
// attempts it took, the last error, and each attempt on opening its row.

import { ago, empty, field, fmtNumber, fmtTime, h } from "../dom.js";
import { disclosure, pagedTable } from "../paged.js";

const STATUS_CLASS = { delivered: "ok", pending: "pending", failed: "failed", suppressed: "plain" };

function attempts(item) {
  const log = item.attempt_log || [];
  if (!log.length) return h("p.muted", {}, "No attempt yet.");
  return h("ul.list.attempts", {}, log.map((a) => h(
    "li", {},
    h("span", {}, h(`span.badge.${a.ok ? "ok" : "failed"}`, {}, a.ok ? "ok" : "failed"), " ",
      a.status_code ? `HTTP ${a.status_code} ` : "", a.error ? h("span.mono", {}, a.error) : null),
    h("span.muted", {}, fmtTime(a.at), ` · ${fmtNumber(a.duration_ms, 0)} ms`),
  )));
}

/** Answers { element, reload(), stop() }; `channels` names the channel filter's options. */
export function renderNotifications(channels) {
  const status = h("select", { name: "status" }, h("option", { value: "" }, "All"),
    Object.keys(STATUS_CLASS).map((s) => h("option", { value: s }, s)));
  const channel = h("select", { name: "channel_id" }, h("option", { value: "" }, "All channels"));
  const alertId = h("input", { name: "alert_id", type: "number", min: 1, placeholder: "Any", "aria-label": "Alert id" });

  function setChannels(list) {
    const chosen = channel.value;
    channel.replaceChildren(h("option", { value: "" }, "All channels"), ...list.map((c) => h("option", { value: String(c.id) }, c.name)));
    channel.value = list.some((c) => String(c.id) === chosen) ? chosen : "";
  }
  setChannels(channels);

  const table = pagedTable({
    path: "/api/v1/notifications",
    query: () => ({ status: status.value, channel_id: channel.value, alert_id: alertId.value }),
    columns: ["Created", "Channel", "Event", { label: "Alert", className: "hide-narrow" }, "Status",
      { label: "Attempts", className: "num" }, "Last error", { label: "Attempts log", hidden: true }],
    row: (item) => h(
      "tr",
      { dataset: { notificationId: item.id, status: item.status } },
      h("td", {}, ago(item.created_at)),
      h("td.break", {}, item.channel_name),
      h("td", {}, item.event),
      h("td.hide-narrow", {}, item.alert_id ? `#${item.alert_id}` : h("span.muted", {}, "—")),
      h("td", {}, h(`span.badge.${STATUS_CLASS[item.status] || "plain"}`, {}, item.status),
        item.status === "pending" && item.attempts ? h("div.muted", {}, "next ", fmtTime(item.next_attempt_at)) : null),
      h("td.num", {}, String(item.attempts)),
      h("td.wrap", {}, item.last_error ? h("span.mono", {}, item.last_error) : h("span.muted", {}, "—")),
      h("td.num", {}, disclosure(() => attempts(item), { "aria-label": `Attempts of notification ${item.id}` }, "Attempts")),
    ),
    empty: () => empty("No notifications", "They are queued here when alerts fire, repeat, escalate, are acknowledged or resolve."),
    summary: (shown) => `${shown} notification${shown === 1 ? "" : "s"}, newest first`,
    pageSize: 50,
  });
  for (const control of [status, channel]) control.addEventListener("change", () => table.reload());
  alertId.addEventListener("change", () => table.reload());
  const element = h(
    "section.card",
    { "aria-labelledby": "notifications-title" },
    h("div.card-head", {}, h("h2", { id: "notifications-title" }, "Notifications"),
      h("div.toolbar", {}, field("Status", status), field("Channel", channel), field("Alert", alertId))),
    table.element,
  );
  return { element, reload: table.reload, stop: table.stop, setChannels };
}
