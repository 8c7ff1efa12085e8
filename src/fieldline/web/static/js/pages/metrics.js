// Metric metadata: what each metric of a device type is called, its unit, decimals and
// kind, which tiles, charts and the overview's columns show instead of the raw name.
//
// Viewers read the table; operators also add, edit and delete entries. Controls a role
// cannot use are not rendered at all.

import { api } from "../api.js";
import { confirmAction, empty, errorBox, field, fill, h, toast } from "../dom.js";
import { modal } from "../alerts/common.js";
import { KINDS } from "../metrics.js";
import { headCell } from "../paged.js";

const ANY_TYPE = "*";
const LABELLED = new Set(["boolean", "enum"]);

const typeName = (deviceType) => (deviceType === ANY_TYPE ? "* (every type)" : deviceType);
const entryPath = (deviceType, metric) =>
  `/api/v1/device-types/${encodeURIComponent(deviceType)}/metrics/${encodeURIComponent(metric)}`;
const byTypeAndMetric = (a, b) =>
  (a.device_type === ANY_TYPE) - (b.device_type === ANY_TYPE)
  || a.device_type.localeCompare(b.device_type) || a.metric.localeCompare(b.metric);

function labelsText(labels) {
  const pairs = Object.entries(labels || {}).sort(([a], [b]) => Number(a) - Number(b));
  return pairs.length ? pairs.map(([value, label]) => `${value} = ${label}`).join(", ") : null;
}

/** Device types and metric names the fleet has, for the form's suggestions. */
async function suggestions(entries) {
  const [summary, latest] = await Promise.all([
    api("GET", "/api/v1/fleet/summary").catch(() => null),
    api("GET", "/api/v1/telemetry/latest", { query: { limit: 1000 } }).catch(() => null),
  ]);
  const types = new Set([ANY_TYPE, ...entries.map((e) => e.device_type), ...(summary?.facets.device_types || [])]);
  const metrics = new Set(entries.map((e) => e.metric));
  for (const item of latest?.items || []) for (const name of Object.keys(item.metrics)) metrics.add(name);
  types.delete("");
  return { types: [...types].sort(), metrics: [...metrics].sort() };
}

/** value = label rows for booleans and enums; answers { element, read(), showFor(kind) }. */
function labelsEditor(labels) {
  const rows = h("div.label-rows");
  const addRow = (value = "", label = "") => {
    const valueInput = h("input", {
      name: "label-value", value, required: true, inputmode: "decimal", autocomplete: "off",
      pattern: "-?[0-9]+(\\.[0-9]+)?", "aria-label": "Value", placeholder: "1",
    });
    const labelInput = h("input", {
      name: "label-text", value: label, required: true, maxlength: 128, autocomplete: "off",
      "aria-label": "Label", placeholder: "on",
    });
    const row = h("div.label-row", {}, valueInput, h("span.muted", { "aria-hidden": "true" }, "="), labelInput,
      h("button.btn.small", { type: "button", "aria-label": "Remove this label", onclick: () => row.remove() }, "Remove"));
    rows.append(row);
    return valueInput;
  };
  for (const [value, label] of Object.entries(labels || {}).sort(([a], [b]) => Number(a) - Number(b))) addRow(value, label);
  const element = h(
    "fieldset.labels-editor",
    {},
    h("legend", {}, "Labels"),
    h("span.muted", {}, "What each value is called, e.g. 0 = closed and 1 = open."),
    rows,
    h("button.btn.small", { type: "button", onclick: () => addRow().focus() }, "Add a label"),
  );
  return {
    element,
    showFor(kind) {
      const shown = LABELLED.has(kind);
      element.hidden = !shown;
      element.disabled = !shown; // hidden rows must not block the form's validation
      if (kind === "boolean" && !rows.children.length) {
        addRow("0", "");
        addRow("1", "");
      }
    },
    read() {
      const read = {};
      for (const row of rows.children) {
        const [value, label] = row.querySelectorAll("input");
        const key = String(Number(value.value)); // "1.0" → "1": how the API keys values
        if (key in read) throw new Error(`The value ${key} has two labels.`);
        read[key] = label.value.trim();
      }
      return read;
    },
  };
}

/** The add or edit form; answers the saved entry, or undefined when cancelled. `known`
 * (a promise of suggestions) fills the form's lists when it arrives. */
function editEntry(entry, known) {
  const editing = Boolean(entry);
  const current = entry || { device_type: "", metric: "", display_name: "", unit: "", decimals: null, kind: "number", labels: {} };
  const typeInput = h("input", {
    name: "device_type", value: current.device_type, required: true, maxlength: 128, autocomplete: "off",
    list: "metric-form-types", readonly: editing, placeholder: "greenhouse, or * for every type",
  });
  const metricInput = h("input", {
    name: "metric", value: current.metric, required: true, maxlength: 128, autocomplete: "off",
    list: "metric-form-metrics", readonly: editing, placeholder: "temperature",
  });
  const displayName = h("input", {
    name: "display_name", value: current.display_name, maxlength: 128, autocomplete: "off", placeholder: "Air temperature",
    autofocus: editing, // the type and metric of an entry are fixed; its name is what is edited first
  });
  const unit = h("input", { name: "unit", value: current.unit, maxlength: 32, autocomplete: "off", placeholder: "°C" });
  const decimals = h("input", {
    name: "decimals", type: "number", min: 0, max: 9, step: 1,
    value: current.decimals === null || current.decimals === undefined ? "" : String(current.decimals),
  });
  const kind = h("select", { name: "kind" }, Object.keys(KINDS).map((k) => h("option", { value: k, selected: k === current.kind }, k)));
  const kindHint = h("span.muted");
  const labels = labelsEditor(current.labels);
  const showKind = () => {
    kindHint.textContent = KINDS[kind.value];
    labels.showFor(kind.value);
  };
  kind.addEventListener("change", showKind);
  showKind();

  const typeList = h("datalist", { id: "metric-form-types" });
  const metricList = h("datalist", { id: "metric-form-metrics" });
  known.then(({ types, metrics }) => {
    fill(typeList, types.map((t) => h("option", { value: t })));
    fill(metricList, metrics.map((m) => h("option", { value: m })));
  });

  const fields = [
    field("Device type", typeInput, editing ? null : "* applies to every type without an entry of its own"),
    typeList,
    field("Metric", metricInput, editing ? null : "The name devices report it by"),
    metricList,
    field("Display name", displayName, "Shown in place of the name devices report; empty: that name"),
    h("div.metric-form-row", {}, field("Unit", unit), field("Decimals", decimals, "Empty: as many as needed")),
    h("label.field", {}, "Kind", kind, kindHint),
    labels.element,
  ];
  const title = editing ? `Edit ${current.metric} of ${typeName(current.device_type)}` : "Add a metric";
  return modal(title, fields, editing ? "Save" : "Add", () => {
    const deviceType = typeInput.value.trim();
    const metric = metricInput.value.trim();
    const body = {
      display_name: displayName.value.trim(),
      unit: unit.value.trim(),
      decimals: decimals.value === "" ? null : Number(decimals.value),
      kind: kind.value,
      labels: LABELLED.has(kind.value) ? labels.read() : {},
    };
    return api("PUT", entryPath(deviceType, metric), { body });
  });
}

function kindsExplained() {
  return h(
    "section.card.kinds",
    { "aria-labelledby": "kinds-title" },
    h("h2", { id: "kinds-title" }, "How each kind is shown"),
    h("dl.props", {}, Object.entries(KINDS).map(([kind, text]) => [h("dt", {}, kind), h("dd", {}, text)])),
    h("p.form-note.muted", {},
      "An entry for a device type applies to its devices; the * entry of a metric applies to every type without one. "
      + "Metrics without an entry are shown by their name, their values as numbers."),
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Metrics");
  const canEdit = ctx.can("operator");
  let entries = [];
  let filter = ctx.query.get("type") || "";
  const error = errorBox();
  const list = h("div", { "aria-live": "polite" }, h("p.muted", {}, "Loading…"));
  const typeFilter = h("select", { name: "type" });
  typeFilter.addEventListener("change", () => {
    filter = typeFilter.value;
    history.replaceState(null, "", filter ? `#/metrics?${new URLSearchParams({ type: filter })}` : "#/metrics");
    show();
  });

  let known = null; // asked for when a form first opens, then kept
  const edit = async (entry) => {
    known ||= suggestions(entries);
    const saved = await editEntry(entry, known);
    if (!saved) return;
    toast(`Saved ${saved.metric} of ${typeName(saved.device_type)}`, "ok");
    await load();
  };

  const remove = async (entry) => {
    const fallback = entries.some((e) => e.device_type === ANY_TYPE && e.metric === entry.metric) && entry.device_type !== ANY_TYPE;
    const ok = await confirmAction(
      `Delete ${entry.metric} of ${typeName(entry.device_type)}?`,
      fallback
        ? `Its devices show ${entry.metric} as the * entry says.`
        : `Its devices show ${entry.metric} by its name, its values as plain numbers.`,
      "Delete",
    );
    if (!ok) return;
    try {
      await api("DELETE", entryPath(entry.device_type, entry.metric));
    } catch (failure) {
      error.textContent = failure.message;
      return;
    }
    toast(`Deleted ${entry.metric} of ${typeName(entry.device_type)}`, "ok");
    await load();
  };

  const row = (entry) => {
    const name = `${entry.metric} (${typeName(entry.device_type)})`;
    const muted = (text) => (text === null || text === undefined || text === "" ? h("span.muted", {}, "—") : text);
    return h(
      "tr",
      { dataset: { deviceType: entry.device_type, metric: entry.metric } },
      h("td.hide-narrow", {}, entry.device_type === ANY_TYPE ? h("span", { title: "Every type without an entry of its own" }, "*") : entry.device_type),
      // On a phone the type, name and kind columns give way; the metric's cell says them.
      h("td.break", {}, h("span.mono", {}, entry.metric), h("div.muted.only-narrow", {},
        [entry.display_name, typeName(entry.device_type), entry.kind === "number" ? "" : entry.kind].filter(Boolean).join(" · "))),
      h("td.hide-narrow", {}, muted(entry.display_name)),
      h("td", {}, muted(entry.unit)),
      h("td.num.hide-narrow", {}, muted(entry.decimals === null ? "" : String(entry.decimals))),
      h("td.hide-narrow", { title: KINDS[entry.kind] || null }, entry.kind),
      h("td.wrap.hide-narrow", {}, muted(labelsText(entry.labels))),
      canEdit
        ? h("td.num", {}, h("div.actions.row-actions", {},
          h("button.btn.small", { type: "button", "aria-label": `Edit ${name}`, onclick: () => edit(entry) }, "Edit"),
          h("button.btn.small.danger", { type: "button", "aria-label": `Delete ${name}`, onclick: () => remove(entry) }, "Delete")))
        : null,
    );
  };

  function show() {
    const types = [...new Set(entries.map((e) => e.device_type))].sort();
    if (filter && !types.includes(filter)) types.push(filter);
    fill(typeFilter, h("option", { value: "" }, "All types"),
      types.map((t) => h("option", { value: t, selected: t === filter }, typeName(t))));
    const shown = entries.filter((e) => !filter || e.device_type === filter);
    if (!shown.length) {
      fill(list, filter
        ? empty(`No entries for ${typeName(filter)}`, "Choose another type, or all types.")
        : empty("No metric metadata yet", canEdit
          ? "Add a metric to give it a name, a unit and decimals; devices show raw names until then."
          : "An operator adds them; devices show raw names until then."));
      return;
    }
    const columns = [
      { label: "Device type", className: "hide-narrow" }, "Metric", { label: "Display name", className: "hide-narrow" }, "Unit", { label: "Decimals", className: "num hide-narrow" },
      { label: "Kind", className: "hide-narrow" },
      { label: "Labels", className: "hide-narrow" }, canEdit ? { label: "Actions", className: "num", hidden: true } : null,
    ].filter(Boolean);
    fill(list, h("div.table-wrap", {}, h("table.data", { "aria-label": "Metric metadata" },
      h("thead", {}, h("tr", {}, columns.map(headCell))), h("tbody", {}, shown.map(row)))));
  }

  async function load() {
    list.setAttribute("aria-busy", "true");
    try {
      entries = (await api("GET", "/api/v1/metric-metadata")).items.sort(byTypeAndMetric);
      error.textContent = "";
      show();
    } catch (failure) {
      error.textContent = `The metric metadata could not be loaded: ${failure.message}`;
    } finally {
      list.removeAttribute("aria-busy");
    }
  }

  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Metrics"),
        h("div.sub", {}, "What each metric of a device type is called, its unit, decimals and kind.")),
      canEdit ? h("div.actions", {}, h("button.btn.primary", { type: "button", onclick: () => edit(null) }, "Add metric")) : null,
    ),
    h("div.stack", {},
      h("section.card", { "aria-label": "Entries" }, h("div.toolbar", {}, field("Device type", typeFilter)), error, list),
      kindsExplained()),
  );
  await load();
  return undefined;
}
