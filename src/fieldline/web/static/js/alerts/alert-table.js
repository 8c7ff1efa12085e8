// Alerts as table rows, the same on the alerts page and on a device's page: what
// opened and closed each one, who acknowledged it, and (for operators) the actions.

import { api } from "../api.js";
import { ago, h, toast } from "../dom.js";
import { acknowledge, deviceLink, severityBadge, silence, silenceChoices, stateBadge, valueAt } from "./common.js";

export const ALERT_COLUMNS = [
  "Severity", "State", "Rule", "Device", { label: "Metric", className: "hide-narrow" },
  "Opened", "Closed", "Acknowledged", { label: "Actions", hidden: true },
];

function ruleCell(alert, ctx) {
  if (alert.kind === "channel") return h("a", { href: "#/channels" }, alert.rule_name);
  // fieldline's own health checks: the health page (admins) shows what failed.
  if (alert.kind === "system") {
    return ctx.can("admin") ? h("a", { href: "#/health" }, alert.rule_name) : h("span", { title: "a check of fieldline's own health" }, alert.rule_name);
  }
  if (!alert.rule_id) return h("span", { title: "rule deleted" }, alert.rule_name);
  return h("a", { href: `#/rules/${alert.rule_id}` }, alert.rule_name);
}

function closedCell(alert) {
  if (alert.state !== "resolved") return h("span.muted", {}, "open ", ago(alert.started_at));
  return h("span", {}, valueAt(alert.resolved_value, alert.resolved_at),
    alert.resolved_reason ? h("div.muted", {}, alert.resolved_reason) : null);
}

function ackCell(alert) {
  if (!alert.acknowledged_at) return h("span.muted", {}, "—");
  return h("span", {}, alert.acknowledged_by, " ", ago(alert.acknowledged_at),
    alert.ack_note ? h("div.muted.note", {}, alert.ack_note) : null);
}

/** The device's group, asked for when an operator opens "Silence" (rows do not carry it). */
async function groupOf(deviceId) {
  if (!deviceId) return null;
  try {
    return (await api("GET", `/api/v1/devices/${encodeURIComponent(deviceId)}`)).group;
  } catch {
    return null;
  }
}

/** One <tr>; onChange() runs after an acknowledgement or a silence made from it. */
export function alertRow(alert, ctx, onChange) {
  const actions = h("td.num.actions-cell");
  if (ctx.can("operator") && alert.state !== "resolved") {
    if (alert.state === "firing") {
      actions.append(h("button.btn.small", {
        type: "button",
        onclick: async () => {
          const updated = await acknowledge(alert);
          if (!updated) return;
          toast(`Acknowledged “${alert.rule_name}”`, "ok");
          onChange();
        },
      }, "Acknowledge"));
    }
    actions.append(h("button.btn.small", {
      type: "button",
      onclick: async () => {
        const created = await silence(silenceChoices(alert, await groupOf(alert.device_id)));
        if (!created) return;
        toast(`Silenced until ${new Date(created.ends_at).toLocaleString()}`, "ok");
        onChange();
      },
    }, "Silence"));
  }
  return h(
    "tr",
    { dataset: { alertId: alert.id, state: alert.state } },
    h("td", {}, severityBadge(alert.severity)),
    h("td", {}, stateBadge(alert.state), alert.silenced ? h("span.badge.plain.silenced", { title: "notifications silenced" }, "silenced") : null),
    h("td.name-cell", {}, ruleCell(alert, ctx)),
    h("td.name-cell", {}, deviceLink(alert.device_id)),
    h("td.hide-narrow", {}, alert.metric || h("span.muted", {}, "—")),
    h("td", {}, valueAt(alert.started_value, alert.started_at)),
    h("td", {}, closedCell(alert)),
    h("td.wrap", {}, ackCell(alert)),
    actions,
  );
}
