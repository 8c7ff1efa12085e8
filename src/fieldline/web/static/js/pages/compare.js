// Compare: one metric over many devices (named, a group's, or the top N by their latest
// value), a second metric on a right-hand axis, and a group's trend (mean, min–max) under
// it. The charts share their time axis, zoom and crosshair; the whole view lives in the
// URL, so it can be shared and reloaded:
//   #/compare?group=north&metric=temperature&metric2=humidity&top=10&order=desc&range=24h

import { api } from "../api.js";
import { createChart, createSync } from "../chart.js";
import { exportMenu } from "../export-menu.js";
import { fmtMetric, metaFor, metricTitle } from "../metrics.js";
import { bucketFor, loadMany } from "../series.js";
import { zoneDescription } from "../time.js";
import { domain, rangeControls, rangeFrom, rangeInto } from "../timerange.js";
import { empty, errorBox, field, fill, h } from "../dom.js";

const MAX_DEVICES = 50; // a legend of more is unreadable; the group's trend covers any size
const TOPS = [1, 3, 5, 10, 20, 50];

const list = (text) => [...new Set((text || "").split(",").map((s) => s.trim()).filter(Boolean))];

export async function render(main, ctx) {
  ctx.setTitle("Compare");
  const view = {
    ...rangeFrom(ctx.query),
    devices: list(ctx.query.get("devices")),
    group: ctx.query.get("group") || "",
    metric: ctx.query.get("metric") || "",
    metric2: ctx.query.get("metric2") || "",
    top: TOPS.includes(Number(ctx.query.get("top"))) ? Number(ctx.query.get("top")) : 0,
    order: ctx.query.get("order") === "asc" ? "asc" : "desc",
  };
  // What the controls offer and what they choose from, asked for at once.
  const fetchLatest = (group) => Promise.all([
    api("GET", "/api/v1/telemetry/latest", { query: { group, limit: 10000 } }),
    api("GET", "/api/v1/fleet/devices", { query: { group, limit: 500 } }),
  ]);
  const [groups, meta, firstLatest] = await Promise.all([
    api("GET", "/api/v1/groups", { query: { limit: 1000 } }).catch(() => ({ items: [] })),
    api("GET", "/api/v1/metric-metadata").catch(() => ({ items: [] })),
    fetchLatest(view.group),
  ]);
  let latest = []; // GET /telemetry/latest items of the group (or fleet) shown
  let types = new Map(); // device id → device type, for units

  const error = errorBox();
  const note = h("p.muted");
  const sync = createSync();
  const zoomTo = (start, end) => {
    view.zoom = { start, end };
    ranges.render();
    apply();
  };
  const firstBox = h("div");
  const secondBox = h("div");
  const trendBox = h("div");
  const first = createChart(firstBox, { label: "Compared devices", height: 260, sync, onZoom: zoomTo });
  const second = createChart(secondBox, { label: "Second metric", height: 220, sync, onZoom: zoomTo });
  const trend = createChart(trendBox, { label: "Group trend", height: 200, sync, onZoom: zoomTo });
  const firstTitle = h("h2");
  const secondCard = h("section.card", { hidden: true }, h("h2", { id: "compare-second" }), secondBox);
  const trendCard = h("section.card", { hidden: true }, h("h2", { id: "compare-trend" }), trendBox);
  const ranges = rangeControls(view, () => apply());

  const devicesInput = h("input", {
    name: "devices", value: view.devices.join(", "), autocomplete: "off", list: "compare-device-ids",
    placeholder: "gh-1, gh-2", size: 28,
  });
  const deviceIds = h("datalist", { id: "compare-device-ids" });
  const groupSelect = h("select", { name: "group" }, h("option", { value: "" }, "Whole fleet"),
    groups.items.map((g) => h("option", { value: g.name, selected: g.name === view.group }, g.name)));
  const metricSelect = h("select", { name: "metric" });
  const metric2Select = h("select", { name: "metric2" });
  const topSelect = h("select", { name: "top" }, h("option", { value: "0" }, "All (up to 50)"),
    TOPS.map((n) => h("option", { value: String(n), selected: n === view.top }, `Top ${n}`)));
  const orderSelect = h("select", { name: "order" },
    h("option", { value: "desc", selected: view.order === "desc" }, "highest latest value"),
    h("option", { value: "asc", selected: view.order === "asc" }, "lowest latest value"));

  function readControls() {
    view.devices = list(devicesInput.value);
    view.group = groupSelect.value;
    view.metric = metricSelect.value;
    view.metric2 = metric2Select.value;
    view.top = Number(topSelect.value);
    view.order = orderSelect.value;
  }
  // A group's devices and metrics, while they load, are what every later change waits for.
  let latestReady = Promise.resolve();
  for (const control of [groupSelect, metricSelect, metric2Select, topSelect, orderSelect]) {
    control.addEventListener("change", async () => {
      readControls();
      if (control === groupSelect) latestReady = loadLatest();
      await latestReady;
      apply();
    });
  }
  devicesInput.addEventListener("change", async () => {
    readControls();
    await latestReady;
    apply();
  });

  function syncUrl() {
    const query = new URLSearchParams();
    if (view.devices.length) query.set("devices", view.devices.join(","));
    if (view.group) query.set("group", view.group);
    if (view.metric) query.set("metric", view.metric);
    if (view.metric2) query.set("metric2", view.metric2);
    if (view.top) query.set("top", String(view.top));
    if (view.top && view.order !== "desc") query.set("order", view.order);
    rangeInto(query, view);
    history.replaceState(null, "", `#/compare?${query}`);
  }

  async function loadLatest(answers = null) {
    const [answer, table] = answers || await fetchLatest(view.group);
    latest = answer.items;
    types = new Map(table.items.map((d) => [d.device_id, d.device_type]));
    fill(deviceIds, latest.map((item) => h("option", { value: item.device_id })));
    const metrics = [...new Set(latest.flatMap((item) => Object.keys(item.metrics)))].sort();
    if (!metrics.includes(view.metric)) view.metric = metrics[0] || "";
    if (view.metric2 && !metrics.includes(view.metric2)) view.metric2 = "";
    const titled = (m) => metricTitle(metaOf(null, m), m);
    fill(metricSelect, metrics.map((m) => h("option", { value: m, selected: m === view.metric }, titled(m))));
    fill(metric2Select, h("option", { value: "" }, "None"),
      metrics.map((m) => h("option", { value: m, selected: m === view.metric2 }, titled(m))));
  }

  const metaOf = (deviceId, metric) => metaFor(meta.items, (deviceId && types.get(deviceId)) || "", metric);

  /** The devices shown: those named, else the group's (or fleet's) that report the metric,
   * optionally only the top N by their latest value. */
  function chosenDevices() {
    if (view.devices.length) return { ids: view.devices.slice(0, MAX_DEVICES), more: Math.max(0, view.devices.length - MAX_DEVICES) };
    const reporting = latest.filter((item) => item.metrics[view.metric]);
    if (view.top) {
      const sign = view.order === "asc" ? 1 : -1;
      reporting.sort((a, b) => sign * (a.metrics[view.metric].value - b.metrics[view.metric].value));
      return { ids: reporting.slice(0, view.top).map((item) => item.device_id), more: 0 };
    }
    return { ids: reporting.slice(0, MAX_DEVICES).map((item) => item.device_id), more: Math.max(0, reporting.length - MAX_DEVICES) };
  }

  // Only the newest of overlapping answers is drawn (a slow one must not replace it).
  let applied = 0;
  async function apply() {
    const mine = ++applied;
    syncUrl();
    if (!view.metric) {
      fill(note, empty("Nothing to compare yet", "Devices appear here once they report telemetry."));
      return;
    }
    const { start, end } = domain(view);
    const { ids, more } = chosenDevices();
    const metrics = [view.metric, ...(view.metric2 && view.metric2 !== view.metric ? [view.metric2] : [])];
    const oneDevice = ids.length === 1;
    try {
      const [series, groupTrend] = await Promise.all([
        ids.length ? loadMany(ids, metrics, start, end) : null,
        view.group && !view.devices.length ? loadTrend(start, end) : null,
      ]);
      if (mine !== applied) return;
      const label = (id) => id;
      const fmt = (id, metric) => (v) => fmtMetric(metaOf(id, metric), v);
      const firstSeries = ids.map((id) => ({ label: oneDevice ? metricTitle(metaOf(id, view.metric), view.metric) : label(id), points: series ? series.get(id, view.metric) : [], format: fmt(id, view.metric) }));
      // Two metrics of one device share one chart, the second on the right-hand axis.
      if (oneDevice && metrics.length === 2) {
        firstSeries.push({ label: metricTitle(metaOf(ids[0], view.metric2), view.metric2), points: series.get(ids[0], view.metric2), right: true, format: fmt(ids[0], view.metric2) });
      }
      firstTitle.textContent = oneDevice
        ? `${ids[0]}: ${metrics.map((m) => metricTitle(metaOf(ids[0], m), m)).join(" and ")}`
        : `${metricTitle(metaOf(ids[0], view.metric), view.metric)} of ${ids.length} devices`;
      first.setSeries(firstSeries, { start, end, bucketMs: series ? series.bucketMs : 0 });
      secondCard.hidden = oneDevice || metrics.length < 2;
      if (!secondCard.hidden) {
        secondCard.querySelector("h2").textContent = `${metricTitle(metaOf(ids[0], view.metric2), view.metric2)} of ${ids.length} devices`;
        second.setSeries(ids.map((id) => ({ label: id, points: series.get(id, view.metric2), format: fmt(id, view.metric2) })), { start, end, bucketMs: series.bucketMs });
      }
      trendCard.hidden = !groupTrend;
      if (groupTrend) {
        trendCard.querySelector("h2").textContent = `Trend of ${view.group}: mean, lowest and highest of ${groupTrend.devices} devices`;
        trend.setSeries([{ label: "mean", points: groupTrend.points, range: true, format: fmt(ids[0], view.metric) }], { start, end, bucketMs: groupTrend.bucketMs });
      }
      const shown = view.top ? `the ${ids.length} with the ${view.order === "asc" ? "lowest" : "highest"} latest value` : `${ids.length} device${ids.length === 1 ? "" : "s"}`;
      fill(note, `${shown}${more ? `; ${more} more not drawn (at most ${MAX_DEVICES}: choose a top N or name devices)` : ""}. Times in ${zoneDescription()}.`);
      error.textContent = "";
    } catch (failure) {
      error.textContent = `The comparison could not be loaded: ${failure.message}`;
    }
  }

  async function loadTrend(start, end) {
    const [bucket, bucketMs] = bucketFor(end - start);
    const answer = await api("GET", `/api/v1/groups/${encodeURIComponent(view.group)}/trend`, {
      query: { metric: view.metric, bucket, start: new Date(start).toISOString(), end: new Date(end).toISOString() },
    });
    return {
      devices: answer.devices,
      bucketMs,
      points: answer.points.map((p) => ({ t: new Date(p.time).getTime(), v: p.avg, lo: p.min, hi: p.max })),
    };
  }

  const exports = exportMenu(() => {
    const { ids } = chosenDevices();
    const metrics = [view.metric, view.metric2].filter(Boolean);
    return { device_id: ids, metric: metrics, ...domain(view) };
  });
  main.append(
    h("div.page-head", {}, h("div", {}, h("h1", {}, "Compare"), h("div.sub", {}, "One metric over many devices, two metrics of one, a group's trend"))),
    h("section.card.compare-controls", { "aria-label": "What to compare" },
      h("div.toolbar", {},
        field("Group", groupSelect),
        h("div.grow", {}, field("Devices", devicesInput, "Empty: every device of the group or fleet")), deviceIds,
        field("Metric", metricSelect),
        field("Second metric", metric2Select),
        field("Devices shown", topSelect),
        field("by", orderSelect)),
      h("div.card-head", {}, ranges.element, exports)),
    error,
    h("section.card", { "aria-labelledby": "compare-first" }, h("div.card-head", {}, firstTitle), firstBox, note),
    secondCard,
    trendCard,
  );
  firstTitle.id = "compare-first";
  await loadLatest(firstLatest);
  await apply();
  return () => {
    for (const chart of [first, second, trend]) chart.destroy();
  };
}
