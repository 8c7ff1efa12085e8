// The rule editor's form: every field of a rule (SPEC §6), shown or hidden by the
// condition's type, read from a rule and turned back into the API's body. The server
// judges the rule (its RuleError messages are shown as they come); the form only
// refuses what it cannot turn into a number.

import { field, h } from "../dom.js";
import { SEVERITIES } from "./common.js";

export const TEMPLATES = [
  {
    key: "low_battery", label: "Low battery",
    rule: {
      name: "Low battery", severity: "warning", scope: {},
      condition: { type: "threshold", metric: "battery_voltage", op: "<", value: 3.3, for_seconds: 300, clear_value: 3.5, clear_for_seconds: 300 },
    },
  },
  {
    key: "warm", label: "Temperature above 8 °C for 10 minutes",
    rule: {
      name: "Temperature above 8 °C", severity: "critical", scope: {},
      condition: { type: "threshold", metric: "temperature", op: ">", value: 8, for_seconds: 600, clear_value: null, clear_for_seconds: 0 },
    },
  },
  {
    key: "offline", label: "Device offline for 5 minutes",
    rule: { name: "Device offline", severity: "warning", scope: {}, condition: { type: "offline", for_seconds: 300 } },
  },
  {
    key: "no_data", label: "No temperature for 30 minutes",
    rule: { name: "No temperature readings", severity: "warning", scope: {}, condition: { type: "no_data", metric: "temperature", for_seconds: 1800 } },
  },
];

const BLANK = {
  name: "", severity: "warning", scope: {}, enabled: true,
  condition: { type: "threshold", metric: "", op: ">", value: null, for_seconds: 0, clear_value: null, clear_for_seconds: 0 },
};
const OPS = [">", ">=", "<", "<=", "==", "!=", "outside"];
const UNITS = [["s", 1], ["min", 60], ["h", 3600], ["d", 86400]];
const SCOPES = [["fleet", "The whole fleet"], ["device_id", "One device"], ["group", "A group"], ["device_type", "A device type"]];

const number = (name, label, props = {}) => h("input", { name, type: "number", step: "any", "aria-label": label, ...props });

/** Seconds as a number and a unit; get() answers whole seconds (the rollout form uses it too). */
export function duration(name, label) {
  const amount = h("input", { name, type: "number", min: 0, step: "any", value: 0, "aria-label": label });
  const unit = h("select", { name: `${name}_unit`, "aria-label": `${label} unit` }, UNITS.map(([u, s]) => h("option", { value: s }, u)));
  return {
    element: h("div.field", {}, h("span.field-label", {}, label), h("div.duration", {}, amount, unit)),
    get: () => Math.round(Number(amount.value || 0) * Number(unit.value)),
    set(seconds) {
      const [, size] = [...UNITS].reverse().find(([, s]) => seconds % s === 0 && seconds >= s) || UNITS[0];
      unit.value = String(size);
      amount.value = String(seconds / size);
    },
  };
}

function read(input, what) {
  const text = input.value.trim();
  if (text === "") return null;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new Error(`${what}: a number`);
  return value;
}

function required(input, what) {
  const value = read(input, what);
  if (value === null) throw new Error(`${what}: required`);
  return value;
}

/**
 * buildRuleForm({ channels (null: unknown to this user), groups, editable })
 * Answers { element, set(rule), get() → body, draft() → { scope, condition } }.
 */
export function buildRuleForm({ channels, groups = [], editable }) {
  const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off" });
  const severity = h("select", { name: "severity" }, SEVERITIES.map((s) => h("option", { value: s }, s)));
  const scopeKind = h("select", { name: "scope_kind" }, SCOPES.map(([value, label]) => h("option", { value }, label)));
  const scopeValue = h("input", { name: "scope_value", autocomplete: "off", list: "rule-groups", "aria-label": "Device id, group or type" });
  const type = h("select", { name: "type" },
    [["threshold", "Threshold: a metric crosses a value"], ["offline", "Offline: the device is offline"], ["no_data", "No data: a metric stops arriving"]]
      .map(([value, label]) => h("option", { value }, label)));
  const metric = h("input", { name: "metric", autocomplete: "off", spellcheck: "false", list: "rule-metrics" });
  const op = h("select", { name: "op" }, OPS.map((o) => h("option", { value: o }, o)));
  const source = h("select", { name: "value_source", "aria-label": "Value from" },
    h("option", { value: "number" }, "a number"), h("option", { value: "metadata" }, "device metadata"));
  const value = number("value", "Value");
  const low = number("value_low", "Low");
  const high = number("value_high", "High");
  const metaKey = h("input", { name: "metadata_key", autocomplete: "off", "aria-label": "Metadata key", placeholder: "max_temp" });
  const metaDefault = number("metadata_default", "Default", { placeholder: "when the device has none" });
  const clearValue = number("clear_value", "Clear value", { placeholder: "the threshold" });
  const clearLow = number("clear_low", "Clear low");
  const clearHigh = number("clear_high", "Clear high");
  const fires = duration("for_seconds", "Fires after");
  const clears = duration("clear_for_seconds", "Clears after");
  const repeat = duration("repeat_seconds", "Repeat every");
  const escalate = duration("escalate_after_seconds", "Escalate after");
  const enabled = h("input", { name: "enabled", type: "checkbox", checked: true });
  let keptClear = null; // a clear value from metadata, which the form does not edit: kept as it was

  function picker(label, name) {
    if (channels === null) {
      const ids = h("input", { name, autocomplete: "off", placeholder: "1, 2", "aria-label": label });
      return { element: field(label, ids, "Channel ids; an admin sees them on the Channels page"),
        get: () => ids.value.split(/[\s,]+/).filter(Boolean).map(Number),
        set: (list) => { ids.value = list.join(", "); } };
    }
    const boxes = channels.map((c) => h("input", { type: "checkbox", name, value: String(c.id) }));
    const group = h("fieldset.channels", {}, h("legend", {}, label), channels.length
      ? channels.map((c, i) => h("label.field.inline", {}, boxes[i], c.name, h("span.muted", {}, ` ${c.type}`)))
      : h("span.muted", {}, "No channels yet: an admin adds them on the Channels page."));
    return { element: group, get: () => boxes.filter((b) => b.checked).map((b) => Number(b.value)),
      set: (list) => boxes.forEach((b) => { b.checked = list.includes(Number(b.value)); }) };
  }
  const notify = picker("Notify", "channels");
  const escalateTo = picker("Escalate to", "escalate_channels");

  const show = (el, on) => { el.hidden = !on; };
  const scopeField = field("Which", scopeValue);
  const metricField = field("Metric", metric);
  const opField = field("Compare", op);
  const sourceField = field("Value from", source);
  const valueField = field("Value", value);
  const bandField = h("div.row-form", {}, field("Low", low), field("High", high));
  const metaFields = h("div.row-form", {}, field("Metadata key", metaKey), field("Default", metaDefault));
  const clearField = field("Clear value", clearValue, "Hysteresis: blank clears at the threshold");
  const clearBand = h("div.row-form", {}, field("Clear low", clearLow), field("Clear high", clearHigh));
  const fireHint = h("p.muted.form-note");

  function sync() {
    const kind = type.value;
    const threshold = kind === "threshold";
    const outside = op.value === "outside";
    show(scopeField, scopeKind.value !== "fleet");
    show(metricField, kind !== "offline");
    for (const el of [opField, clears.element]) show(el, threshold);
    show(sourceField, threshold && !outside);
    show(valueField, threshold && !outside && source.value === "number");
    show(metaFields, threshold && !outside && source.value === "metadata");
    show(bandField, threshold && outside);
    show(clearField, threshold && !outside);
    show(clearBand, threshold && outside);
    fireHint.textContent = {
      threshold: "Fires when the condition has held this long (0: at once); clears when the clear condition has held for “Clears after”.",
      offline: "Fires when the device has been offline this long.",
      no_data: "Fires when the metric has not arrived for this long, timed per device.",
    }[kind];
  }
  for (const control of [type, op, source, scopeKind]) control.addEventListener("change", sync);

  function scope() {
    const kind = scopeKind.value;
    if (kind === "fleet") return {};
    const text = scopeValue.value.trim();
    if (!text) throw new Error("Which device, group or type the rule watches: required");
    return { [kind]: text };
  }

  function condition() {
    const kind = type.value;
    if (kind === "offline") return { type: kind, for_seconds: fires.get() };
    if (!metric.value.trim()) throw new Error("Metric: required");
    if (kind === "no_data") return { type: kind, metric: metric.value.trim(), for_seconds: fires.get() };
    let bound;
    let clear;
    if (op.value === "outside") {
      bound = [required(low, "Low"), required(high, "High")];
      const pair = [read(clearLow, "Clear low"), read(clearHigh, "Clear high")];
      clear = pair.every((v) => v === null) ? null : pair;
    } else {
      bound = source.value === "metadata"
        ? { metadata: metaKey.value.trim(), default: read(metaDefault, "Default") }
        : required(value, "Value");
      clear = read(clearValue, "Clear value") ?? keptClear;
    }
    return {
      type: kind, metric: metric.value.trim(), op: op.value, value: bound, for_seconds: fires.get(),
      clear_value: clear, clear_for_seconds: clears.get(),
    };
  }

  function set(rule) {
    const c = rule.condition;
    name.value = rule.name || "";
    severity.value = rule.severity || "warning";
    const [kind] = Object.keys(rule.scope || {});
    scopeKind.value = kind || "fleet";
    scopeValue.value = kind ? rule.scope[kind] : "";
    type.value = c.type;
    metric.value = c.metric || "";
    fires.set(c.for_seconds || 0);
    op.value = c.op || ">";
    const v = c.value;
    source.value = v && typeof v === "object" && !Array.isArray(v) ? "metadata" : "number";
    value.value = typeof v === "number" ? String(v) : "";
    [low.value, high.value] = Array.isArray(v) ? v.map(String) : ["", ""];
    metaKey.value = source.value === "metadata" ? v.metadata : "";
    metaDefault.value = source.value === "metadata" && v.default !== null ? String(v.default) : "";
    const cv = c.clear_value;
    keptClear = cv && typeof cv === "object" && !Array.isArray(cv) ? cv : null;
    clearValue.value = typeof cv === "number" ? String(cv) : "";
    clearValue.placeholder = keptClear ? `metadata “${keptClear.metadata}”` : "the threshold";
    [clearLow.value, clearHigh.value] = Array.isArray(cv) ? cv.map(String) : ["", ""];
    clears.set(c.clear_for_seconds || 0);
    notify.set(rule.channels || []);
    escalateTo.set(rule.escalate_channels || []);
    repeat.set(rule.repeat_seconds || 0);
    escalate.set(rule.escalate_after_seconds || 0);
    enabled.checked = rule.enabled !== false;
    sync();
  }

  const fieldset = h(
    "fieldset.rule-form",
    { disabled: !editable },
    h("div.row-form", {}, h("div.grow", {}, field("Name", name)), field("Severity", severity)),
    h("h3", {}, "Watches"),
    h("div.row-form", {}, field("Scope", scopeKind), scopeField),
    h("datalist", { id: "rule-groups" }, groups.map((g) => h("option", { value: g }))),
    h("h3", {}, "Condition"),
    field("Type", type),
    h("div.row-form", {}, metricField, opField, sourceField, valueField),
    metaFields, bandField,
    h("datalist", { id: "rule-metrics" }, ["temperature", "humidity", "battery_voltage", "signal_strength"].map((m) => h("option", { value: m }))),
    h("div.row-form", {}, fires.element, clearField, clears.element),
    clearBand, fireHint,
    h("h3", {}, "Notifications"),
    h("div.channel-pickers", {}, notify.element, escalateTo.element),
    h("div.row-form", {}, repeat.element, escalate.element),
    h("p.muted.form-note", {}, "Repeats go out while the alert fires unacknowledged (0: never); escalation adds its channels once nobody acknowledged in time (0: never)."),
    h("label.field.inline", {}, enabled, "Enabled"),
  );
  set(BLANK);

  return {
    element: fieldset,
    set,
    draft: () => ({ scope: scope(), condition: condition() }),
    get: () => ({
      name: name.value.trim(), severity: severity.value, scope: scope(), condition: condition(),
      channels: notify.get(), escalate_channels: escalateTo.get(), repeat_seconds: repeat.get(),
      escalate_after_seconds: escalate.get(), enabled: enabled.checked,
    }),
    focus: () => name.focus(),
  };
}
