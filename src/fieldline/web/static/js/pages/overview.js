// The fleet overview: devices by status, live ingest and rejected rates, and the
// devices table (paged, sorted and filtered by the server, so 10,000 devices cost
// the browser one page of rows).

import { api, stream } from "../api.js";
import { renderAlertSummary } from "../alerts/summary.js";
import { ago, attempt, clear, fill, empty, errorBox, field, fmtNumber, fmtRate, h, showSecret, statusBadge } from "../dom.js";
import { fmtMetric, metaFor } from "../metrics.js";
import { zoneDescription } from "../time.js";

const PAGE_SIZES = [25, 50, 100, 200];
const TABLE_REFRESH_MS = 5000;
const COLUMNS = [
  { key: "device_id", label: "Device" },
  { key: "status", label: "Status" },
  { key: "last_seen", label: "Last seen", zoned: true },
  { key: "group", label: "Group", narrow: true },
  { key: "device_type", label: "Type", narrow: true },
  { key: "firmware_version", label: "Firmware", narrow: true },
  { key: "battery", label: "Battery", num: true },
  { key: "signal", label: "Signal", num: true, narrow: true },
];
const FILTERS = ["q", "group", "device_type", "status", "firmware_version"];

// The battery and signal columns show the latest of the first of these metrics a device
// reports (domain/vitals.py); their metadata is looked up by the same names, in order.
// Without metadata they read as they always have: volts to 2 decimals, dBm to none.
const VITALS = {
  battery: { metrics: ["battery_voltage", "battery"], unit: "V", digits: 2 },
  signal: { metrics: ["signal_strength", "rssi", "signal"], unit: "dBm", digits: 0 },
};

function vitalMeta(entries, deviceType, key) {
  for (const metric of VITALS[key].metrics) {
    const meta = metaFor(entries, deviceType, metric);
    if (meta) return meta;
  }
  return null;
}

/** The unit the metadata of every row with a value gives the column; "" when they differ or one has none. */
function sharedUnit(entries, items, key) {
  const shown = items.filter((device) => device[key] !== null && device[key] !== undefined);
  const units = new Set(shown.map((device) => vitalMeta(entries, device.device_type, key)?.unit || ""));
  return units.size === 1 ? [...units][0] : "";
}

function vital(entries, device, key, shared) {
  const value = device[key];
  if (value === null || value === undefined) return "—";
  const meta = vitalMeta(entries, device.device_type, key);
  if (!meta) return `${fmtNumber(value, VITALS[key].digits)} ${VITALS[key].unit}`;
  // A unit in the column's header is not repeated in its cells.
  return fmtMetric(shared ? { ...meta, unit: "" } : meta, value);
}

function sparkline(values, bad = false) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", `spark${bad ? " bad" : ""}`);
  svg.setAttribute("viewBox", "0 0 100 28");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  if (values.length > 1) {
    const top = Math.max(...values, 1);
    const step = 100 / (values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(2)},${(26 - (v / top) * 24).toFixed(2)}`);
    const line = document.createElementNS(ns, "path");
    line.setAttribute("class", "line");
    line.setAttribute("d", `M${points.join("L")}`);
    const area = document.createElementNS(ns, "path");
    area.setAttribute("class", "area");
    area.setAttribute("d", `M0,28L${points.join("L")}L100,28Z`);
    svg.append(area, line);
  }
  return svg;
}

function stat(label, value, unit, extra) {
  return h("div.stat", {}, h("div.label", {}, label), h("div.value", {}, value, unit ? h("small", {}, unit) : null), extra);
}

export async function render(main, ctx) {
  ctx.setTitle("Fleet");
  const state = {
    sort: ctx.query.get("sort") || "device_id",
    order: ctx.query.get("order") || "asc",
    offset: Number(ctx.query.get("offset")) || 0,
    limit: PAGE_SIZES.includes(Number(ctx.query.get("limit"))) ? Number(ctx.query.get("limit")) : 50,
  };
  for (const name of FILTERS) state[name] = ctx.query.get(name) || "";

  const subtitle = h("div.sub", {}, "Loading…");
  const stats = h("section.stats", { "aria-label": "Fleet at a glance" });
  const tableError = errorBox();
  const tableArea = h("div", { "aria-live": "polite" });
  const pager = h("div.pager");
  const controls = {};
  let facets = { groups: [], device_types: [], firmware_versions: [] };
  let loading = false;
  let summarySeen = null;
  // Fetched once; a dashboard without the endpoint's answer keeps the plain columns.
  const metadata = api("GET", "/api/v1/metric-metadata").then((answer) => answer.items, () => []);

  function select(name, label, options, labels = {}) {
    const control = h(
      "select",
      { name, onchange: () => setFilter(name, control.value) },
      h("option", { value: "" }, "All"),
      options.map((o) => h("option", { value: o, selected: state[name] === o }, labels[o] || o)),
    );
    controls[name] = control;
    return field(label, control);
  }

  const search = h("input", {
    type: "search", name: "q", placeholder: "Device id or name", value: state.q, autocomplete: "off",
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => setFilter("q", search.value.trim()), 250);
  });
  const toolbar = h("div.toolbar");

  function renderToolbar() {
    fill(toolbar, 
      h("div.grow", {}, field("Search", search)),
      select("status", "Status", ["online", "offline", "never_seen", "disabled"], { never_seen: "never seen" }),
      select("group", "Group", facets.groups),
      select("device_type", "Type", facets.device_types),
      select("firmware_version", "Firmware", facets.firmware_versions),
    );
  }

  function syncUrl() {
    const query = new URLSearchParams();
    for (const name of [...FILTERS, "sort", "order"]) if (state[name]) query.set(name, state[name]);
    if (state.offset) query.set("offset", state.offset);
    if (state.limit !== 50) query.set("limit", state.limit);
    const text = query.toString();
    history.replaceState(null, "", text ? `#/?${text}` : "#/");
  }

  function setFilter(name, value) {
    state[name] = value;
    state.offset = 0;
    if (name === "q" && search.value.trim() !== value) search.value = value;
    if (controls[name] && controls[name].value !== value) controls[name].value = value;
    syncUrl();
    loadTable();
    if (name === "status" && summarySeen) renderStats(summarySeen);
  }

  function renderStats(summary) {
    const d = summary.devices;
    const ingest = summary.ingest;
    // A status card filters the table by its status; pressed again, it clears the filter.
    const statusCard = (status, label, count) =>
      h(
        "button.stat",
        {
          type: "button",
          "aria-pressed": String(state.status === status),
          title: `Show ${label} devices`,
          onclick: () => setFilter("status", state.status === status ? "" : status),
        },
        h("div.label", {}, h(`span.swatch.${status}`), label),
        h("div.value", {}, count.toLocaleString()),
      );
    fill(stats, 
      statusCard("online", "Online", d.online),
      statusCard("offline", "Offline", d.offline),
      statusCard("never_seen", "Never seen", d.never_seen),
      statusCard("disabled", "Disabled", d.disabled),
      stat("Ingest", fmtRate(ingest.readings_per_second), "readings/s", sparkline(ingest.history.map((b) => b.readings))),
      stat(
        ctx.can("operator") ? h("a", { href: "#/rejected" }, "Rejected") : "Rejected",
        fmtRate(ingest.rejected_per_second),
        "msg/s",
        sparkline(ingest.history.map((b) => b.rejected), true),
      ),
    );
    subtitle.textContent = `${d.total.toLocaleString()} devices · ${d.online.toLocaleString()} online`;
    const facetsChanged = JSON.stringify(summary.facets) !== JSON.stringify(facets);
    facets = summary.facets;
    if (facetsChanged) renderToolbar();
    const first = summarySeen === null;
    summarySeen = summary;
    if (first && d.total === 0) loadTable();
  }

  function header(column, units) {
    const active = state.sort === column.key;
    const sortLabel = active ? (state.order === "asc" ? "ascending" : "descending") : "none";
    const button = h(
      "button.sort",
      {
        type: "button",
        onclick: () => {
          state.order = active && state.order === "asc" ? "desc" : "asc";
          state.sort = column.key;
          state.offset = 0;
          syncUrl();
          loadTable();
        },
      },
      units[column.key] ? `${column.label} (${units[column.key]})` : column.label,
      h("span.arrow", { "aria-hidden": "true" }, active && state.order === "desc" ? "▼" : "▲"),
    );
    const classes = [column.num ? "num" : "", column.narrow ? "hide-narrow" : ""].filter(Boolean).join(" ");
    const title = column.zoned ? `Times in ${zoneDescription()}` : null;
    return h("th", { scope: "col", "aria-sort": sortLabel, class: classes || null, title }, button);
  }

  function row(device, entries, units) {
    const link = h("a", { href: `#/devices/${encodeURIComponent(device.device_id)}` }, device.device_id);
    return h(
      "tr",
      { dataset: { deviceId: device.device_id } },
      h("td", {}, link, device.name && device.name !== device.device_id ? h("div.muted", {}, device.name) : null),
      h("td", {}, statusBadge(device.status)),
      h("td", {}, ago(device.last_seen)),
      h("td.hide-narrow", {}, device.group || h("span.muted", {}, "—")),
      h("td.hide-narrow", {}, device.device_type || h("span.muted", {}, "—")),
      h("td.hide-narrow.mono", {}, device.firmware_version || h("span.muted", {}, "—")),
      h("td.num", {}, vital(entries, device, "battery", units.battery)),
      h("td.num.hide-narrow", {}, vital(entries, device, "signal", units.signal)),
    );
  }

  function renderTable(answer, entries) {
    const filtered = FILTERS.some((name) => state[name]);
    if (answer.total === 0) {
      clear(pager);
      if (filtered) {
        fill(tableArea, 
          empty(
            "No devices match these filters",
            h("button.btn", {
              type: "button",
              onclick: () => {
                for (const name of FILTERS) state[name] = "";
                search.value = "";
                renderToolbar();
                setFilter("q", "");
              },
            }, "Clear filters"),
          ),
        );
      } else {
        fill(tableArea, 
          empty(
            "No devices yet",
            "Run ",
            h("code", {}, "fieldline simulate --create --devices 10 --username admin --password …"),
            " to start a simulated fleet, or add a device.",
          ),
        );
      }
      return;
    }
    const units = {
      battery: sharedUnit(entries, answer.items, "battery"),
      signal: sharedUnit(entries, answer.items, "signal"),
    };
    const table = h(
      "table.data",
      { "aria-label": "Devices" },
      h("thead", {}, h("tr", {}, COLUMNS.map((column) => header(column, units)))),
      h("tbody", {}, answer.items.map((device) => row(device, entries, units))),
    );
    fill(tableArea, h("div.table-wrap", {}, table));
    const first = answer.total ? answer.offset + 1 : 0;
    const last = answer.offset + answer.items.length;
    const size = h(
      "select",
      {
        "aria-label": "Rows per page",
        onchange: () => {
          state.limit = Number(size.value);
          state.offset = 0;
          syncUrl();
          loadTable();
        },
      },
      PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, `${n} per page`)),
    );
    const move = (offset) => {
      state.offset = Math.max(0, offset);
      syncUrl();
      loadTable();
    };
    fill(pager, 
      h("span", { class: "range" }, `${first.toLocaleString()}–${last.toLocaleString()} of ${answer.total.toLocaleString()}`),
      h(
        "div.actions",
        {},
        size,
        h("button.btn.small", { type: "button", disabled: state.offset === 0, onclick: () => move(state.offset - state.limit) }, "Previous"),
        h("button.btn.small", { type: "button", disabled: last >= answer.total, onclick: () => move(state.offset + state.limit) }, "Next"),
      ),
    );
  }

  async function loadTable({ quiet = false } = {}) {
    // A refresh would take keyboard focus away from a row or header the user is on.
    if (quiet && (loading || tableArea.contains(document.activeElement) || pager.contains(document.activeElement))) return undefined;
    loading = true;
    try {
      const answer = await api("GET", "/api/v1/fleet/devices", {
        query: {
          q: state.q, group: state.group, device_type: state.device_type, status: state.status,
          firmware_version: state.firmware_version, sort: state.sort, order: state.order,
          offset: state.offset, limit: state.limit,
        },
      });
      if (answer.items.length === 0 && state.offset > 0 && answer.total > 0) {
        state.offset = Math.max(0, Math.floor((answer.total - 1) / state.limit) * state.limit);
        syncUrl();
        loading = false;
        return loadTable();
      }
      tableError.textContent = "";
      renderTable(answer, await metadata);
    } catch (error) {
      tableError.textContent = `The devices could not be loaded: ${error.message}`;
    } finally {
      loading = false;
    }
    return undefined;
  }

  const actions = h("div.actions");
  if (ctx.can("operator")) actions.append(h("button.btn.primary", { type: "button", onclick: () => addDevice(ctx, facets) }, "Add device"));
  const alertSummary = renderAlertSummary();
  main.append(
    h("div.page-head", {}, h("div", {}, h("h1", {}, "Fleet"), subtitle), actions),
    stats,
    alertSummary.element,
    h("section.card", { "aria-label": "Devices" }, toolbar, tableError, tableArea, pager),
  );
  renderToolbar();
  // The stats' stream and the table's first page are asked for together.
  const stop = stream("/api/v1/fleet/stream", { summary: renderStats }, ctx.setLive);
  const timer = setInterval(() => loadTable({ quiet: true }), TABLE_REFRESH_MS);
  await loadTable();
  return () => {
    stop();
    alertSummary.stop();
    clearInterval(timer);
    clearTimeout(searchTimer);
  };
}

function addDevice(ctx, facets) {
  const error = errorBox();
  const id = h("input", { name: "device_id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}", autocomplete: "off" });
  const name = h("input", { name: "name", autocomplete: "off" });
  const type = h("input", { name: "device_type", autocomplete: "off", list: "device-types" });
  const group = h("select", { name: "group" }, h("option", { value: "" }, "No group"), facets.groups.map((g) => h("option", { value: g }, g)));
  const submit = h("button.btn.primary", { type: "submit" }, "Add device");
  const dialog = h(
    "dialog",
    { "aria-labelledby": "add-device-title" },
    h("h2", { id: "add-device-title" }, "Add a device"),
    h(
      "form.stack-form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const created = await attempt(error, submit, () =>
            api("POST", "/api/v1/devices", {
              body: { device_id: id.value.trim(), name: name.value.trim(), device_type: type.value.trim(), group: group.value || null },
            }),
          );
          if (!created) return;
          dialog.close();
          const mqtt = created.mqtt;
          await showSecret(
            "Device added",
            `Its MQTT password is shown only now. Connect as ${mqtt.username} to ${mqtt.host}:${mqtt.port}.`,
            mqtt.password,
          );
          ctx.navigate(`#/devices/${encodeURIComponent(created.device_id)}`);
        },
      },
      field("Device id", id, "Letters, digits and _ . : - ; also its MQTT username"),
      field("Name", name),
      field("Type", type),
      h("datalist", { id: "device-types" }, facets.device_types.map((t) => h("option", { value: t }))),
      field("Group", group),
      error,
      h("div.actions", {}, h("button.btn", { type: "button", onclick: () => dialog.close() }, "Cancel"), submit),
    ),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  id.focus();
}
