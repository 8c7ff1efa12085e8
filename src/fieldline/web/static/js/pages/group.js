// One group: its devices with their latest values, the group's trend of a metric
// (mean, min and max across its devices per bucket), its devices on a map, its shared
// configuration; operators send a command to the whole group or a selection, and
// disable or enable many devices at once.
//
// The view (metric, range, zoom) lives in the URL: #/groups/north?metric=temperature&range=24h

import { api, stream } from "../api.js";
import { createChart } from "../chart.js";
import { exportMenu } from "../export-menu.js";
import { byMetric, fmtMetric, metaFor, metricTitle } from "../metrics.js";
import { bucketFor } from "../series.js";
import { setPageZone, zoneDescription } from "../time.js";
import { configPanel } from "./groups.js";
import { domain, rangeControls, rangeFrom, rangeInto } from "../timerange.js";
import {
  ago, attempt, confirmAction, empty, errorBox, field, fill, h, statusBadge, toast,
} from "../dom.js";

const MAX_DEVICES = 100; // the first page; the overview pages through a bigger group
const SHOWN_METRICS = 4;

export async function render(main, ctx) {
  const name = ctx.params[0];
  const base = `/api/v1/groups/${encodeURIComponent(name)}`;
  ctx.setTitle(name);
  const view = { ...rangeFrom(ctx.query), metric: ctx.query.get("metric") || "" };
  // Leaflet's module first: the browser's six connections to the server would otherwise
  // be taken by the data requests below while it waits.
  const mapModule = import("../map.js");
  // The page's data is asked for with the group itself; `take(key)` answers the first
  // request's promise once, a new request after that (a refresh).
  const ask = {
    table: () => api("GET", "/api/v1/fleet/devices", { query: { group: name, limit: MAX_DEVICES, sort: "device_id" } }),
    values: () => api("GET", "/api/v1/telemetry/latest", { query: { group: name, limit: MAX_DEVICES } }),
    meta: () => api("GET", "/api/v1/metric-metadata").catch(() => ({ items: [] })),
    positions: () => api("GET", "/api/v1/positions", { query: { group: name } }).catch(() => ({ items: [] })),
    config: () => api("GET", `${base}/config`),
    mapSettings: () => api("GET", "/api/v1/map"),
    // The trend of the metric the address names (else asked for once the devices say).
    trend: () => {
      if (!view.metric) return Promise.resolve(null);
      const { start, end } = domain(view);
      const [bucket, bucketMs] = bucketFor(end - start);
      return api("GET", `${base}/trend`, {
        query: { metric: view.metric, bucket, start: new Date(start).toISOString(), end: new Date(end).toISOString() },
      }).then((answer) => ({ answer, start, end, bucketMs }));
    },
  };
  const early = Object.fromEntries(Object.entries(ask).map(([key, request]) => {
    const promise = request();
    promise.catch(() => {}); // read, and its failure shown, where it is taken
    return [key, promise];
  }));
  const take = (key) => {
    const promise = early[key] || ask[key]();
    early[key] = null;
    return promise;
  };
  let group;
  try {
    group = await api("GET", base);
  } catch (error) {
    main.append(error.status === 404
      ? empty("No such group", `There is no group “${name}”. `, h("a", { href: "#/groups" }, "All groups"))
      : h("div.alert", { role: "alert" }, error.message));
    return undefined;
  }
  setPageZone(group.timezone || null);

  const selected = new Set();
  let devices = [];
  let latest = new Map(); // device id → { metric: { value, time } }
  let metaEntries = [];

  const metricSelect = h("select", { name: "metric", onchange: () => { view.metric = metricSelect.value; syncUrl(); loadTrend(); } });
  const ranges = rangeControls(view, () => { syncUrl(); loadTrend(); });
  const trendBox = h("div");
  const trendError = errorBox();
  const trendNote = h("p.muted");
  const chart = createChart(trendBox, {
    label: `Trend of ${name}`,
    onZoom: (start, end) => {
      view.zoom = { start, end };
      ranges.render();
      syncUrl();
      loadTrend();
    },
  });
  const tableArea = h("div", { "aria-live": "polite" });
  const bulk = h("div.actions.bulk-actions");
  const mapCard = h("section.card", { "aria-labelledby": "group-map-title", hidden: true },
    h("h2", { id: "group-map-title" }, "Map"));
  const mapBox = h("div.small", { id: "group-map" });
  mapCard.append(mapBox);

  function syncUrl() {
    const query = new URLSearchParams();
    if (view.metric) query.set("metric", view.metric);
    rangeInto(query, view);
    history.replaceState(null, "", `#/groups/${encodeURIComponent(name)}?${query}`);
  }

  const metaOf = (device, metric) => metaFor(metaEntries, device ? device.device_type : "", metric);
  const POSITION = ["lat", "latitude", "lon", "lng", "longitude"];
  const isPosition = (metric) => {
    const kind = metaOf(devices[0], metric)?.kind;
    return kind === "latitude" || kind === "longitude" || (!kind && POSITION.includes(metric));
  };

  // Metrics the group's devices report: described ones (metadata) first, coordinates
  // (shown on the map) last, then the most widespread.
  function groupMetrics() {
    const counts = new Map();
    for (const metrics of latest.values()) {
      for (const metric of Object.keys(metrics)) counts.set(metric, (counts.get(metric) || 0) + 1);
    }
    const rank = (m) => [metaOf(devices[0], m) ? 0 : 1, isPosition(m) ? 1 : 0, -counts.get(m)];
    return [...counts.keys()].sort((a, b) => {
      const [x, y] = [rank(a), rank(b)];
      return x[1] - y[1] || x[0] - y[0] || x[2] - y[2] || a.localeCompare(b);
    });
  }

  function renderMetricChoice() {
    const metrics = groupMetrics();
    if (!view.metric || !metrics.includes(view.metric)) view.metric = view.metric || metrics[0] || "";
    fill(metricSelect, metrics.map((m) => h("option", { value: m, selected: m === view.metric }, metricTitle(metaOf(devices[0], m), m))));
  }

  async function loadTrend() {
    if (!view.metric) {
      chart.setData([], {});
      trendNote.textContent = "No device of this group has reported yet.";
      return;
    }
    try {
      // The first answer was asked for with the page, unless no metric was known then.
      const { answer: trend, start, end, bucketMs } = (await take("trend")) || (await ask.trend());
      const points = trend.points.map((p) => ({ t: new Date(p.time).getTime(), v: p.avg, lo: p.min, hi: p.max, n: p.devices }));
      chart.setSeries(
        [{ label: `mean of ${trend.devices} devices`, points, range: true, format: (v) => fmtMetric(metaOf(devices[0], view.metric), v) }],
        { start, end, bucketMs },
      );
      const most = Math.max(0, ...points.map((p) => p.n));
      trendNote.textContent = points.length
        ? `The line is the mean of all readings per ${trend.bucket}; the band spans the lowest to the highest. Up to ${most} of ${trend.devices} devices reported in a bucket.`
        : "";
      trendError.textContent = "";
    } catch (error) {
      trendError.textContent = `The trend could not be loaded: ${error.message}`;
    }
  }

  async function loadDevices() {
    // Both sorted by device id: the latest values of the table's devices.
    const [table, values, meta] = await Promise.all([
      take("table"), take("values"), take("meta"),
    ]);
    devices = table.items;
    latest = new Map(values.items.map((item) => [item.device_id, item.metrics]));
    metaEntries = meta.items;
    for (const id of [...selected]) if (!devices.some((d) => d.device_id === id)) selected.delete(id);
    renderTable(table.total);
  }

  function renderTable(total) {
    const metrics = groupMetrics().filter((m) => !isPosition(m)).slice(0, SHOWN_METRICS);
    const operator = ctx.can("operator");
    if (!devices.length) {
      fill(tableArea, empty("No devices in this group", "Put devices in it from their page (Edit) or when adding them."));
      renderBulk();
      return;
    }
    const all = h("input", {
      type: "checkbox",
      "aria-label": "Select every device",
      checked: selected.size === devices.length,
      onchange: () => {
        for (const d of devices) (all.checked ? selected.add(d.device_id) : selected.delete(d.device_id));
        renderTable(total);
      },
    });
    const head = h("tr", {},
      operator ? h("th", { scope: "col" }, all) : null,
      h("th", { scope: "col" }, "Device"),
      h("th", { scope: "col" }, "Status"),
      h("th.hide-narrow", { scope: "col" }, "Last seen"),
      metrics.map((m, i) => h(`th.num${i >= 2 ? ".hide-narrow" : ""}`, { scope: "col" }, metricTitle(metaOf(devices[0], m), m))));
    const rows = devices.map((device) => {
      const values = latest.get(device.device_id) || {};
      const box = h("input", {
        type: "checkbox",
        "aria-label": `Select ${device.device_id}`,
        checked: selected.has(device.device_id),
        onchange: () => {
          if (box.checked) selected.add(device.device_id);
          else selected.delete(device.device_id);
          all.checked = selected.size === devices.length;
          renderBulk();
        },
      });
      return h("tr", { dataset: { deviceId: device.device_id } },
        operator ? h("td", {}, box) : null,
        h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(device.device_id)}` }, device.device_id),
          device.name && device.name !== device.device_id ? h("div.muted", {}, device.name) : null),
        h("td", {}, statusBadge(device.status)),
        h("td.hide-narrow", {}, ago(device.last_seen)),
        metrics.map((m, i) => h(`td.num${i >= 2 ? ".hide-narrow" : ""}`, { dataset: { metric: m } },
          values[m] ? fmtMetric(metaOf(device, m), values[m].value) : h("span.muted", {}, "—"))));
    });
    fill(tableArea,
      total > devices.length ? h("p.muted", {}, `The first ${devices.length} of ${total} devices; `, h("a", { href: `#/?${new URLSearchParams({ group: name })}` }, "all of them in the overview"), ".") : null,
      h("div.table-wrap", {}, h("table.data", { "aria-label": `Devices of ${name}` }, h("thead", {}, head), h("tbody", {}, rows))));
    renderBulk();
  }

  function targets() {
    return selected.size ? [...selected].sort() : devices.map((d) => d.device_id);
  }

  function renderBulk() {
    compareHref();
    if (!ctx.can("operator") || !devices.length) {
      fill(bulk);
      return;
    }
    const which = selected.size ? `${selected.size} selected` : `all ${devices.length}`;
    fill(bulk,
      h("span.muted", { "aria-live": "polite" }, selected.size ? `${selected.size} selected` : "None selected: actions apply to every device"),
      h("button.btn.small", { type: "button", onclick: () => sendCommand() }, `Send command to ${which}`),
      h("button.btn.small", { type: "button", onclick: () => setEnabled(false) }, `Disable ${which}`),
      h("button.btn.small", { type: "button", onclick: () => setEnabled(true) }, `Enable ${which}`));
  }

  async function setEnabled(enabled) {
    const ids = targets();
    if (!enabled) {
      const ok = await confirmAction(
        `Disable ${ids.length} device${ids.length === 1 ? "" : "s"}?`,
        "They are disconnected now and refused until enabled again.",
        "Disable",
      );
      if (!ok) return;
    }
    try {
      const answer = await api("POST", "/api/v1/devices/enabled", { body: { device_ids: ids, enabled } });
      toast(`${answer.items.length} device${answer.items.length === 1 ? "" : "s"} ${enabled ? "enabled" : "disabled"}`, "ok");
      selected.clear();
      await loadDevices();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  function sendCommand() {
    const ids = targets();
    const error = errorBox();
    const command = h("input", { name: "name", required: true, autocomplete: "off", placeholder: "reboot" });
    const params = h("textarea.short", { name: "params", rows: 3, spellcheck: "false", placeholder: "{}" });
    const submit = h("button.btn.primary", { type: "submit" }, `Send to ${ids.length} device${ids.length === 1 ? "" : "s"}`);
    const dialog = h("dialog", { "aria-labelledby": "group-command-title" },
      h("h2", { id: "group-command-title" }, `Command to ${selected.size ? "the selected devices" : `every device of ${name}`}`),
      h("form.stack-form", {
        onsubmit: async (event) => {
          event.preventDefault();
          const answer = await attempt(error, submit, () => {
            let parsed = {};
            if (params.value.trim()) {
              try {
                parsed = JSON.parse(params.value);
              } catch (failure) {
                throw new Error(`The parameters are not valid JSON: ${failure.message}`);
              }
            }
            return api("POST", `${base}/commands`, {
              body: { name: command.value.trim(), params: parsed, device_ids: selected.size ? ids : null },
            });
          });
          if (!answer) return;
          dialog.close();
          const refused = answer.refused.length ? `; ${answer.refused.length} refused (${answer.refused.map((r) => `${r.device_id}: ${r.reason}`).join(", ")})` : "";
          toast(`${command.value.trim()} sent to ${answer.items.length} device${answer.items.length === 1 ? "" : "s"}${refused}`, "ok");
        },
      },
      field("Command", command),
      field("Parameters (JSON)", params),
      h("p.muted", {}, "Devices online get it now, the others when they are next online; each device's page shows its answer."),
      error,
      h("div.actions", {}, h("button.btn", { type: "button", onclick: () => dialog.close() }, "Cancel"), submit)));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    command.focus();
  }

  let map = null;
  async function loadMap() {
    const positions = await take("positions");
    mapCard.hidden = positions.items.length === 0;
    if (mapCard.hidden) return;
    if (!map) {
      const { createMap } = await mapModule;
      map = await createMap(mapBox, {
        settings: take("mapSettings"),
        label: `Devices of ${name} on the map`,
        onOpen: (deviceId) => ctx.navigate(`#/devices/${encodeURIComponent(deviceId)}`),
      });
      map.setDevices(positions.items);
    } else {
      map.setDevices(positions.items, { fitView: false });
    }
  }

  // Compares the selected devices, or the group's when none is selected.
  const compareLink = h("a.btn", { href: `#/compare?${new URLSearchParams({ group: name })}` }, "Compare devices");
  const compareHref = () => {
    const query = new URLSearchParams(selected.size ? { devices: [...selected].sort().join(",") } : { group: name });
    if (view.metric) query.set("metric", view.metric);
    compareLink.href = `#/compare?${query}`;
    compareLink.textContent = selected.size ? `Compare ${selected.size} selected` : "Compare devices";
  };
  const exports = exportMenu(() => ({ group: name, metric: view.metric ? [view.metric] : undefined, ...domain(view) }));
  main.append(
    h("div.page-head", {},
      h("div", {},
        h("div.muted", {}, h("a", { href: "#/groups" }, "Groups"), " / ", name),
        h("h1", {}, name),
        h("div.sub", {}, group.description || "", group.description ? " · " : "",
          `${group.device_count} device${group.device_count === 1 ? "" : "s"}`,
          group.timezone ? ` · ${group.timezone}` : "")),
      h("div.actions", {},
        compareLink,
        h("a.btn", { href: `#/?${new URLSearchParams({ group: name })}` }, "In the overview"))),
    h("section.card", { "aria-labelledby": "group-trend-title" },
      h("div.card-head", {}, h("h2", { id: "group-trend-title" }, "Trend"), h("div.actions", {}, field("Metric", metricSelect), ranges.element)),
      trendError, trendBox, trendNote,
      h("div.card-foot", {}, h("span.muted", {}, `Times in ${zoneDescription()}`), exports)),
    mapCard,
    h("section.card", { "aria-labelledby": "group-devices-title" },
      h("div.card-head", {}, h("h2", { id: "group-devices-title" }, "Devices"), bulk), tableArea),
    h("section.card", { "aria-labelledby": "group-config-title" }, h("h2", { id: "group-config-title" }, "Configuration"),
      configPanel(name, ctx.can("operator"), take("config"))),
  );
  // Everything is asked for at once; the trend waits for the devices only when the
  // address names no metric (the group's own metrics choose it).
  const named = Boolean(view.metric);
  const devicesLoaded = loadDevices().then(() => {
    renderMetricChoice();
    syncUrl();
  });
  await Promise.all([
    named ? loadTrend() : devicesLoaded.then(loadTrend),
    devicesLoaded,
    loadMap(),
  ]);

  // The fleet's stream says when something changed; the page refreshes at most every 5 s.
  let timer = null;
  const stop = stream("/api/v1/fleet/stream", {
    summary: () => {
      if (timer) return;
      timer = setTimeout(async () => {
        timer = null;
        const focused = tableArea.contains(document.activeElement);
        if (!focused) await loadDevices().catch(() => {});
        loadMap();
      }, 5000);
    },
  }, ctx.setLive);
  return () => {
    stop();
    clearTimeout(timer);
    chart.destroy();
    if (map) map.destroy();
    setPageZone(null);
  };
}
