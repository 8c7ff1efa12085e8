// One device: live tiles of its latest values, a chart per metric (booleans and enums
// as state timelines, a latitude/longitude pair as a track on a map), its status
// history, attributes, configuration (desired vs reported), commands, and the
// operator's actions (edit, rotate credentials, disable, delete).
//
// The device's stream (GET /devices/{id}/stream) pushes `device`, `latest`,
// `config` and `commands` whenever they change; everything else is fetched.

import { api, stream } from "../api.js";
import { createChart, createSync } from "../chart.js";
import { byMetric, fmtMetric, metricName, metricTitle } from "../metrics.js";
import { loadMany } from "../series.js";
import { exportMenu } from "../export-menu.js";
import { setPageZone, zoneDescription } from "../time.js";
import { RANGES, domain as viewDomain, rangeControls, rangeFrom, rangeInto } from "../timerange.js";
import { renderCommands, renderConfig } from "./device-control.js";
import { renderDeviceAlerts } from "../alerts/device-alerts.js";
import { renderDeviceUpdates } from "../ota/device-updates.js";
import {
  ago, clear, fill, confirmAction, empty, errorBox, fmtTime, h, showSecret, statusBadge, toast,
} from "../dom.js";

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
  const trackCard = h("section.card", { hidden: true, "aria-labelledby": "device-track-title" },
    h("h2", { id: "device-track-title" }, "Track"));
  const trackBox = h("div.small", { id: "device-track" });
  trackCard.append(trackBox);
  let track = null; // the map, made when the device first reports a position
  const details = h("div");
  const attributes = h("div");
  const statusHistory = h("div");
  const configArea = h("div");
  const commandsArea = h("div");
  const alertsArea = h("div");
  const updatesArea = h("div");
  const chartError = errorBox();

  // The range (and a zoom) from the address, so a view can be shared and reloaded.
  const view = rangeFrom(ctx.query, "1h");
  const rangeChosen = ctx.query.has("range");
  // One crosshair over every chart of the page.
  const sync = createSync();
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

  const domain = () => viewDomain(view);
  const syncUrl = () => {
    const query = new URLSearchParams();
    rangeInto(query, view);
    history.replaceState(null, "", `#/devices/${encodeURIComponent(deviceId)}?${query}`);
  };
  const ranges = rangeControls(view, () => {
    syncUrl();
    loadCharts();
  });
  const renderRangePicker = () => ranges.render();

  // Which metrics hold the device's position: metadata's kinds, else lat and lon.
  function positionMetrics(metrics) {
    const kind = (k) => metrics.find((m) => meta.get(m)?.kind === k);
    const named = (names) => metrics.find((m) => names.includes(m) && !meta.get(m)?.kind?.match(/boolean|enum/));
    const lat = kind("latitude") || named(["lat", "latitude"]);
    const lon = kind("longitude") || named(["lon", "lng", "longitude"]);
    return lat && lon ? [lat, lon] : null;
  }
  const isState = (metric) => ["boolean", "enum"].includes(meta.get(metric)?.kind);

  function chartFor(metric) {
    let entry = chartsByMetric.get(metric);
    if (!entry) {
      const box = h("div");
      const title = metricTitle(meta.get(metric), metric);
      const card = h("section.card", { dataset: { chart: metric } }, h("div.card-head", {}, h("h2", { title: metric }, title)), box);
      const chart = createChart(box, {
        label: title,
        height: isState(metric) ? 90 : 220,
        sync,
        onZoom: (start, end) => {
          view.zoom = { start, end };
          renderRangePicker();
          syncUrl();
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
    const reported = Object.keys(latest).sort();
    const position = positionMetrics(reported);
    // A position is drawn as a track on the map, not as two line charts.
    const metrics = reported.filter((m) => !position || !position.includes(m));
    if (!reported.length) {
      fill(charts, h("div.card", {}, empty("No charts yet", "Each metric the device reports gets a chart.")));
      return;
    }
    const { start, end } = domain();
    const cards = metrics.map((metric) => chartFor(metric).card);
    // Moving a chart in the page would cancel a drag the user is making on it.
    const same = cards.length === charts.children.length && cards.every((card, i) => charts.children[i] === card);
    if (!same) fill(charts, cards);
    const states = metrics.filter(isState);
    const numbers = metrics.filter((m) => !isState(m));
    try {
      // Every chart's series in one request (the browser would queue one per metric);
      // states by the highest value of each bucket, so a brief "on" is not averaged away.
      const [plain, stated] = await Promise.all([
        numbers.length || position ? loadMany([deviceId], [...numbers, ...(position || [])], start, end) : null,
        states.length ? loadMany([deviceId], states, start, end, undefined, "max") : null,
      ]);
      for (const metric of numbers) {
        const one = meta.get(metric);
        chartFor(metric).chart.setData(plain.get(deviceId, metric), {
          start, end, bucketMs: plain.bucketMs, bands: alerts.bands(metric), format: (v) => fmtMetric(one, v),
        });
      }
      for (const metric of states) {
        const one = meta.get(metric);
        const labels = { ...(one.kind === "boolean" ? { 0: "false", 1: "true" } : {}), ...one.labels };
        chartFor(metric).chart.setSeries([{ label: metricName(one, metric), points: stated.get(deviceId, metric) }], {
          start, end, bucketMs: stated.bucketMs, bands: alerts.bands(metric), states: { labels },
        });
      }
      if (position) await drawTrack(plain, position);
      chartError.textContent = "";
    } catch (error) {
      chartError.textContent = `The charts could not be loaded: ${error.message}`;
    }
  }

  async function drawTrack(series, [lat, lon]) {
    trackCard.hidden = false;
    // Leaflet is loaded only for a device that reports a position.
    if (!track) {
      const { createMap } = await import("../map.js");
      track = await createMap(trackBox, { label: `Track of ${deviceId}` });
    }
    const lats = series.get(deviceId, lat);
    const lons = new Map(series.get(deviceId, lon).map((p) => [p.t, p.v]));
    track.setTrack(lats.filter((p) => lons.has(p.t)).map((p) => ({ t: p.t, lat: p.v, lon: lons.get(p.t) })));
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
      h("div.card-head", {}, h("h2", {}, "History"), ranges.element),
      chartError,
      charts,
      h("div.card-foot", {}, h("span.muted", {}, `Times in ${zoneDescription()}`),
        exportMenu(() => ({ device_id: [deviceId], ...domain() }))),
    ),
    trackCard,
    h(
      "div.grid.two",
      {},
      h("section.card", {}, h("h2", {}, "Configuration"), configArea),
      h("section.card", {}, h("h2", {}, "Commands"), commandsArea),
      h("section.card", {}, h("h2", {}, "Details"), details),
      h("section.card", {}, h("h2", {}, "Status history"), statusHistory),
      h("section.card", {}, h("h2", {}, "Attributes"), attributes),
      h("section.card.device-updates-card", { "aria-labelledby": "device-updates-title" },
        h("h2", { id: "device-updates-title" }, "Firmware updates"), updatesArea),
    ),
  );
  renderHead();
  renderDetails();
  // Times in the zone of the device's group, when the user chose that.
  if (device.group) {
    api("GET", `/api/v1/groups/${encodeURIComponent(device.group)}`)
      .then((group) => setPageZone(group.timezone || null))
      .catch(() => {});
  }
  const config = renderConfig(configArea, ctx, base);
  const commands = renderCommands(commandsArea, ctx, base);
  const updates = renderDeviceUpdates(updatesArea, base);
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
        // Back on another version: an update may have succeeded or rolled back.
        if (next.firmware_version !== device.firmware_version) updates.reload();
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
    updates.stop();
    clearInterval(clock);
    clearTimeout(refreshTimer);
    clearTimeout(attributesTimer);
    for (const { chart } of chartsByMetric.values()) chart.destroy();
    if (track) track.destroy();
  };
}
