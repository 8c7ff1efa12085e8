// One device: live tiles of its latest values, a chart per metric, its status
// history, attributes, configuration (desired vs reported), commands, and the
// operator's actions (rotate credentials, disable, delete).
//
// The device's stream (GET /devices/{id}/stream) pushes `device`, `latest`,
// `config` and `commands` whenever they change; everything else is fetched.

import { api, stream } from "../api.js";
import { createChart } from "../chart.js";
import { byMetric, fmtMetric, metricName, metricTitle } from "../metrics.js";
import { loadMany } from "../series.js";
import { renderCommands, renderConfig } from "./device-control.js";
import { renderDeviceAlerts } from "../alerts/device-alerts.js";
import {
  ago, clear, fill, confirmAction, empty, errorBox, fmtTime, h, showSecret, statusBadge, toast,
} from "../dom.js";

const RANGES = [
  { key: "15m", label: "15 min", ms: 900e3 },
  { key: "1h", label: "1 h", ms: 3600e3 },
  { key: "6h", label: "6 h", ms: 6 * 3600e3 },
  { key: "24h", label: "24 h", ms: 24 * 3600e3 },
  { key: "7d", label: "7 d", ms: 7 * 86400e3 },
  { key: "30d", label: "30 d", ms: 30 * 86400e3 },
  { key: "90d", label: "90 d", ms: 90 * 86400e3 },
];
/** The default range: the shortest that reaches the device's newest value, so a device
 * that last reported three days ago opens on its data, not on an empty hour. */
function fittingRange(metrics) {
  const times = Object.values(metrics).map((m) => new Date(m.time).getTime());
  if (!times.length) return "1h";
  const age = Date.now() - Math.max(...times);
  const fits = RANGES.find((r) => r.ms >= Math.max(age * 1.1, 3600e3));
  return (fits || RANGES[RANGES.length - 1]).key;
}

export async function render(main, ctx) {
  const deviceId = ctx.params[0];
  const base = `/api/v1/devices/${encodeURIComponent(deviceId)}`;
  ctx.setTitle(deviceId);
  // The latest values (which say what charts to draw) are asked for with the device.
  const firstLatest = api("GET", `${base}/telemetry/latest`).catch(() => ({ metrics: {} }));
  // Names, units and decimals of its metrics (by its type); without them, raw names.
  const firstMeta = api("GET", `${base}/metric-metadata`).catch(() => ({ items: [] }));
  let device;
  try {
    device = await api("GET", base);
  } catch (error) {
    main.append(
      error.status === 404
        ? empty("No such device", `There is no device “${deviceId}”. `, h("a", { href: "#/" }, "Back to the fleet"))
        : h("div.alert", { role: "alert" }, error.message),
    );
    return undefined;
  }

  const head = h("div.page-head");
  const tiles = h("div.tiles", { "aria-live": "polite", "aria-label": "Latest values" });
  const charts = h("div.grid.two");
  const rangeButtons = h("div.segmented", { role: "group", "aria-label": "Time range" });
  const zoomNote = h("div.actions");
  const details = h("div");
  const attributes = h("div");
  const statusHistory = h("div");
  const configArea = h("div");
  const commandsArea = h("div");
  const alertsArea = h("div");
  const chartError = errorBox();

  const view = { range: ctx.query.get("range") || "1h", zoom: null };
  const rangeChosen = ctx.query.has("range");
  const chartsByMetric = new Map();
  let latest = {};
  let lastStatus = null;
  let meta = new Map();
  let refreshTimer = null;
  let lastChartLoad = 0;

  function renderHead() {
    const actions = h("div.actions");
    if (ctx.can("operator")) {
      const edit = async () => {
        const { editDevice } = await import("./device-edit.js");
        const updated = await editDevice(device);
        if (updated) {
          device = updated;
          renderHead();
          renderDetails();
        }
      };
      actions.append(
        h("button.btn", { type: "button", onclick: edit }, "Edit"),
        h("button.btn", { type: "button", onclick: rotate }, "Rotate credentials"),
        h("button.btn", { type: "button", onclick: toggleEnabled }, device.enabled ? "Disable" : "Enable"),
        h("button.btn.danger", { type: "button", onclick: remove }, "Delete"),
      );
    }
    fill(head, 
      h(
        "div",
        {},
        h("div.muted", {}, h("a", { href: "#/" }, "Fleet"), " / ", device.group || "no group"),
        h("h1", {}, device.device_id, " ", statusBadge(device.enabled ? device.status : "disabled")),
        h("div.sub", {}, device.name || "", device.name ? " · " : "", "last seen ", ago(device.last_seen)),
      ),
      actions,
    );
  }

  function renderDetails() {
    const row = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? h("span.muted", {}, "—"))];
    fill(details, 
      h(
        "dl.props",
        {},
        row("Device id", h("span.mono", {}, device.device_id)),
        row("Name", device.name || null),
        row("Type", device.device_type || null),
        row("Group", device.group),
        row("Firmware", device.firmware_version),
        row("Enabled", device.enabled ? "yes" : "no"),
        row("Last seen", device.last_seen ? fmtTime(device.last_seen) : "never"),
        row("Registered", fmtTime(device.created_at)),
        row("Metadata", Object.keys(device.metadata).length ? h("pre", {}, JSON.stringify(device.metadata, null, 2)) : null),
      ),
      ctx.can("operator") ? h("p", {}, h("a", { href: `#/rejected?device_id=${encodeURIComponent(deviceId)}` }, "Rejected messages of this device")) : null,
    );
  }

  function renderTiles(metrics) {
    const names = Object.keys(metrics).sort();
    if (!names.length) {
      fill(tiles, empty("No readings yet", "Values appear here as soon as the device publishes telemetry."));
      return;
    }
    const previous = latest;
    latest = metrics;
    fill(tiles, 
      names.map((name) => {
        const { value, time } = metrics[name];
        const changed = previous[name] && previous[name].time !== time;
        return h(
          `div.tile${changed ? ".flash" : ""}`,
          { dataset: { metric: name } },
          h("div.label", { title: name }, metricName(meta.get(name), name)),
          h("div.value", {}, fmtMetric(meta.get(name), value)),
          h("div.when", {}, ago(time)),
        );
      }),
    );
  }

  function domain() {
    if (view.zoom) return view.zoom;
    const range = RANGES.find((r) => r.key === view.range) || RANGES[0];
    const end = Date.now();
    return { start: end - range.ms, end };
  }

  function renderRangePicker() {
    fill(rangeButtons, 
      RANGES.map((r) =>
        h("button", {
          type: "button",
          "aria-pressed": String(!view.zoom && view.range === r.key),
          onclick: () => {
            view.range = r.key;
            view.zoom = null;
            history.replaceState(null, "", `#/devices/${encodeURIComponent(deviceId)}?range=${r.key}`);
            renderRangePicker();
            loadCharts();
          },
        }, r.label),
      ),
    );
    fill(zoomNote, 
      view.zoom
        ? [
          h("span.muted", {}, `${fmtTime(new Date(view.zoom.start).toISOString())} – ${fmtTime(new Date(view.zoom.end).toISOString())}`),
          h("button.btn.small", { type: "button", onclick: () => { view.zoom = null; renderRangePicker(); loadCharts(); } }, "Reset zoom"),
        ]
        : h("span.muted", {}, "Drag across a chart to zoom"),
    );
  }

  function chartFor(metric) {
    let entry = chartsByMetric.get(metric);
    if (!entry) {
      const box = h("div");
      const title = metricTitle(meta.get(metric), metric);
      const card = h("section.card", { dataset: { chart: metric } }, h("div.card-head", {}, h("h2", { title: metric }, title)), box);
      const chart = createChart(box, {
        label: title,
        onZoom: (start, end) => {
          view.zoom = { start, end };
          renderRangePicker();
          loadCharts();
        },
      });
      entry = { card, chart };
      chartsByMetric.set(metric, entry);
    }
    return entry;
  }

  async function loadCharts() {
    lastChartLoad = Date.now();
    const metrics = Object.keys(latest).sort();
    if (!metrics.length) {
      fill(charts, h("div.card", {}, empty("No charts yet", "Each metric the device reports gets a chart.")));
      return;
    }
    const { start, end } = domain();
    const cards = metrics.map((metric) => chartFor(metric).card);
    // Moving a chart in the page would cancel a drag the user is making on it.
    const same = cards.length === charts.children.length && cards.every((card, i) => charts.children[i] === card);
    if (!same) fill(charts, cards);
    try {
      // Every chart's series in one request (the browser would queue one per metric).
      const { bucketMs, get } = await loadMany([deviceId], metrics, start, end);
      for (const metric of metrics) {
        chartFor(metric).chart.setData(get(deviceId, metric), { start, end, bucketMs, bands: alerts.bands(metric) });
      }
      chartError.textContent = "";
    } catch (error) {
      chartError.textContent = `The charts could not be loaded: ${error.message}`;
    }
  }

  // New values redraw the charts, at most every few seconds, unless the user zoomed.
  function chartsFollowLatest() {
    if (view.zoom || refreshTimer) return;
    const span = domain().end - domain().start;
    const every = span <= 6 * 3600e3 ? 2000 : 15000;
    const wait = Math.max(0, lastChartLoad + every - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      loadCharts();
    }, wait);
  }

  async function loadHistory() {
    try {
      const answer = await api("GET", `${base}/status-history`, { query: { limit: 20 } });
      fill(statusHistory, 
        answer.items.length
          ? h(
            "ul.list",
            {},
            answer.items.map((e) =>
              h(
                "li",
                {},
                h("span", {}, statusBadge(e.status), " ", e.detail && e.detail.reason ? h("span.muted", {}, e.detail.reason) : null),
                h("span.muted", { title: fmtTime(e.time) }, ago(e.time)),
              )),
          )
          : empty("No status changes yet"),
      );
    } catch (error) {
      fill(statusHistory, h("div.alert", { role: "alert" }, error.message));
    }
  }

  async function loadAttributes() {
    try {
      const answer = await api("GET", `${base}/attributes`);
      const names = Object.keys(answer.attributes).sort();
      fill(attributes, 
        names.length
          ? h("dl.props", {}, names.map((n) => [h("dt", {}, n), h("dd.mono", { title: fmtTime(answer.attributes[n].time) }, answer.attributes[n].value)]))
          : empty("No attributes reported"),
      );
    } catch (error) {
      fill(attributes, h("div.alert", { role: "alert" }, error.message));
    }
  }

  async function rotate() {
    const ok = await confirmAction(
      "Rotate credentials?",
      `${deviceId}'s current MQTT password stops working at once; the device must be given the new one.`,
      "Rotate",
    );
    if (!ok) return;
    try {
      const answer = await api("POST", `${base}/credentials`);
      await showSecret("New MQTT password", `Shown only now. The device connects as ${answer.mqtt.username}.`, answer.mqtt.password);
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async function toggleEnabled() {
    const enable = !device.enabled;
    if (!enable) {
      const ok = await confirmAction("Disable device?", `${deviceId} is disconnected now and refused until enabled again.`, "Disable");
      if (!ok) return;
    }
    try {
      device = await api("PATCH", base, { body: { enabled: enable } });
      renderHead();
      renderDetails();
      toast(enable ? "Device enabled" : "Device disabled");
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async function remove() {
    const ok = await confirmAction(
      "Delete device?",
      `${deviceId} is removed from the registry and disconnected; its stored telemetry is kept.`,
      "Delete",
    );
    if (!ok) return;
    try {
      await api("DELETE", base);
      toast(`${deviceId} deleted`);
      ctx.navigate("#/");
    } catch (error) {
      toast(error.message, "error");
    }
  }

  main.append(
    head,
    h("section", { "aria-label": "Latest values" }, tiles),
    h("section.card.device-alerts", { "aria-labelledby": "device-alerts-title" }, h("h2", { id: "device-alerts-title" }, "Alerts"), alertsArea),
    h(
      "section.card.charts",
      { "aria-label": "Charts" },
      h("div.card-head", {}, h("h2", {}, "History"), h("div.actions", {}, zoomNote, rangeButtons)),
      chartError,
      charts,
    ),
    h(
      "div.grid.two",
      {},
      h("section.card", {}, h("h2", {}, "Configuration"), configArea),
      h("section.card", {}, h("h2", {}, "Commands"), commandsArea),
      h("section.card", {}, h("h2", {}, "Details"), details),
      h("section.card", {}, h("h2", {}, "Status history"), statusHistory),
      h("section.card", {}, h("h2", {}, "Attributes"), attributes),
    ),
  );
  renderHead();
  renderDetails();
  renderRangePicker();
  const config = renderConfig(configArea, ctx, base);
  const commands = renderCommands(commandsArea, ctx, base);
  // Alert periods shade the charts, so the charts wait for the alerts' first answer.
  const alerts = renderDeviceAlerts(alertsArea, ctx, deviceId, () => loadCharts());
  const sides = Promise.all([loadHistory(), loadAttributes()]);
  meta = byMetric((await firstMeta).items);
  const firstValues = (await firstLatest).metrics;
  if (!rangeChosen) view.range = fittingRange(firstValues);
  renderRangePicker();
  renderTiles(firstValues);
  await Promise.all([alerts.ready.then(loadCharts), sides]);

  const stop = stream(
    `${base}/stream`,
    {
      device: (next) => {
        const statusChanged = lastStatus !== null && lastStatus !== next.status;
        lastStatus = next.status;
        device = next;
        renderHead();
        renderDetails();
        if (statusChanged) loadHistory();
      },
      latest: (next) => {
        const known = Object.keys(latest).sort().join();
        renderTiles(next.metrics);
        if (Object.keys(next.metrics).sort().join() !== known) loadCharts();
        else chartsFollowLatest();
        loadAttributesSoon();
      },
      config: (state) => config.update(state),
      commands: (list) => commands.update(list.items),
      gone: () => {
        toast(`${deviceId} was deleted`);
        ctx.navigate("#/");
      },
    },
    ctx.setLive,
  );

  let attributesTimer = null;
  function loadAttributesSoon() {
    if (attributesTimer) return;
    attributesTimer = setTimeout(() => {
      attributesTimer = null;
      loadAttributes();
    }, 30000);
  }

  // "3 s ago" must keep counting between events.
  const clock = setInterval(() => {
    for (const el of main.querySelectorAll("time[datetime]")) {
      el.textContent = ago(el.getAttribute("datetime")).textContent;
    }
  }, 5000);

  return () => {
    stop();
    alerts.stop();
    clearInterval(clock);
    clearTimeout(refreshTimer);
    clearTimeout(attributesTimer);
    for (const { chart } of chartsByMetric.values()) chart.destroy();
  };
}
