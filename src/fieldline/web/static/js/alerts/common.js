// What the alerting pages share: badges, the order active alerts are shown in, how a
// rule's condition reads in one line, and the two actions on an alert (acknowledge
// with a note, silence its device, group or rule until a time).

import { api } from "../api.js";
import { attempt, errorBox, field, fmtNumber, fmtTime, h } from "../dom.js";

export const SEVERITIES = ["critical", "warning", "info"];
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
const STATE_RANK = { firing: 0, acknowledged: 1, resolved: 2 };

export const severityBadge = (severity) => h(`span.badge.sev-${severity}`, {}, severity);
export const stateBadge = (state) => h(`span.badge.state-${state}`, {}, state);

/** Firing before acknowledged, then critical > warning > info, then newest first. */
export function byUrgency(a, b) {
  return (STATE_RANK[a.state] - STATE_RANK[b.state])
    || (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity])
    || (Date.parse(b.started_at) - Date.parse(a.started_at))
    || (b.id - a.id);
}

/** Every page of a list endpoint, up to `max` items (active alerts, rules, channels). */
export async function listAll(path, query = {}, max = 1000) {
  const items = [];
  let cursor;
  do {
    const page = await api("GET", path, { query: { ...query, limit: 200, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return { items, more: Boolean(cursor) };
}

export function deviceLink(deviceId) {
  if (!deviceId) return h("span.muted", {}, "—");
  return h("a", { href: `#/devices/${encodeURIComponent(deviceId)}` }, deviceId);
}

/** A value and the reading time it was taken at, e.g. "9.3 at 7 Dec 10:00:00". */
export function valueAt(value, iso) {
  if (!iso) return h("span.muted", {}, "—");
  return h("span", {}, value === null || value === undefined ? "" : `${fmtNumber(value)} `, h("span.muted", {}, fmtTime(iso)));
}

function bound(value) {
  if (Array.isArray(value)) return `${fmtNumber(value[0])}…${fmtNumber(value[1])}`;
  if (value && typeof value === "object") {
    const fallback = value.default === null || value.default === undefined ? "" : `, else ${fmtNumber(value.default)}`;
    return `metadata “${value.metadata}”${fallback}`;
  }
  return fmtNumber(value);
}

const seconds = (s) => (s % 3600 === 0 && s ? `${s / 3600} h` : s % 60 === 0 && s ? `${s / 60} min` : `${s} s`);

/** "temperature > 8 for 10 min (clears at 7.5)", "offline for 5 min", "no temperature for 1 h". */
export function describeCondition(condition) {
  if (condition.type === "offline") return `offline for ${seconds(condition.for_seconds)}`;
  if (condition.type === "no_data") return `no ${condition.metric} for ${seconds(condition.for_seconds)}`;
  const held = condition.for_seconds ? ` for ${seconds(condition.for_seconds)}` : "";
  const clear = condition.clear_value === null || condition.clear_value === undefined
    ? "" : ` (clears at ${bound(condition.clear_value)})`;
  return `${condition.metric} ${condition.op} ${bound(condition.value)}${held}${clear}`;
}

export function describeScope(scope) {
  if (scope.device_id) return ["device ", deviceLink(scope.device_id)];
  if (scope.group) return `group ${scope.group}`;
  if (scope.device_type) return `type ${scope.device_type}`;
  return "the whole fleet";
}

/** A form in a dialog: send() runs on submit; its answer resolves the promise (undefined if cancelled). */
export function modal(titleText, fields, submitLabel, send) {
  return new Promise((resolve) => {
    const error = errorBox();
    const submit = h("button.btn.primary", { type: "submit" }, submitLabel);
    let result;
    const id = `modal-${Math.random().toString(36).slice(2)}`;
    const form = h("form.stack-form", {}, fields, error, h("div.actions", {},
      h("button.btn", { type: "button", onclick: () => dialog.close() }, "Cancel"), submit));
    const dialog = h("dialog", { "aria-labelledby": id }, h("h2", { id }, titleText), form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      result = await attempt(error, submit, send);
      if (result !== undefined) dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Acknowledge with an optional note; answers the updated alert, or undefined if cancelled. */
export function acknowledge(alert) {
  const note = h("textarea.short", { name: "note", maxlength: 1000, placeholder: "On my way; door left open" });
  return modal(
    `Acknowledge “${alert.rule_name}”${alert.device_id ? ` on ${alert.device_id}` : ""}`,
    [field("Note", note, "Optional; shown with the alert and sent to its channels")],
    "Acknowledge",
    () => api("POST", `/api/v1/alerts/${alert.id}/ack`, { body: note.value.trim() ? { note: note.value.trim() } : {} }),
  );
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const TARGETS = { device_id: "Device", group: "Group", rule_id: "Rule" };

/**
 * Silence a device, group or rule until a time, with a reason. `choices` lists what
 * may be silenced, e.g. [{ kind: "device_id", value: "cold-1", label: "device cold-1" }];
 * with none, the target is typed. Answers the created silence, or undefined.
 */
export function silence(choices = []) {
  const kind = h("select", { name: "target" }, (choices.length ? choices : Object.keys(TARGETS).map((k) => ({ kind: k })))
    .map((c, i) => h("option", { value: String(i) }, c.label || TARGETS[c.kind])));
  const typed = h("input", { name: "value", autocomplete: "off", required: !choices.length });
  const until = h("input", { name: "ends_at", type: "datetime-local", required: true, value: localInput(new Date(Date.now() + 3600e3)) });
  const quick = h("div.actions", {}, [["1 h", 1], ["4 h", 4], ["1 day", 24], ["1 week", 168]].map(([label, hours]) =>
    h("button.btn.small", { type: "button", onclick: () => { until.value = localInput(new Date(Date.now() + hours * 3600e3)); } }, label)));
  const reason = h("input", { name: "reason", required: true, maxlength: 500, placeholder: "Maintenance window" });
  const fields = [
    field("Silence", kind),
    choices.length ? null : field("Device id, group name or rule id", typed),
    field("Until", until), quick,
    field("Reason", reason),
  ];
  return modal("Silence notifications", fields, "Silence", () => {
    const choice = choices.length ? choices[Number(kind.value)] : { kind: Object.keys(TARGETS)[Number(kind.value)], value: typed.value.trim() };
    const value = choice.kind === "rule_id" ? Number(choice.value) : choice.value;
    const endsAt = new Date(until.value);
    if (Number.isNaN(endsAt.getTime())) throw new Error("Choose when the silence ends");
    return api("POST", "/api/v1/silences", { body: { [choice.kind]: value, ends_at: endsAt.toISOString(), reason: reason.value.trim() } });
  });
}

/** What an alert row may silence: its device, its device's group (when known), its rule. */
export function silenceChoices(alert, group) {
  const choices = [];
  if (alert.device_id) choices.push({ kind: "device_id", value: alert.device_id, label: `Device ${alert.device_id}` });
  if (group) choices.push({ kind: "group", value: group, label: `Group ${group}` });
  if (alert.rule_id) choices.push({ kind: "rule_id", value: alert.rule_id, label: `Rule “${alert.rule_name}”` });
  return choices;
}
