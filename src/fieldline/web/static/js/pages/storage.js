// Storage: how big the database is, per tier and per device, and when its disk fills.
//
// Sizes are read when the page opens; points per device and the growth come from the
// worker's hourly measurement (docs/data.md, "How much is stored").

import { api } from "../api.js";
import { ago, empty, h } from "../dom.js";
import { headCell } from "../paged.js";

// The tiers of docs/data.md, in the API's order.
const TIERS = { raw: "Raw points", hourly: "Hourly rollups", daily: "Daily rollups" };
const UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

/** 12_345_678 → "12.3 MB": powers of 1000, as disks are sold. */
function fmtBytes(count) {
  let value = count;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

const plural = (count, noun) => `${count.toLocaleString()} ${noun}${count === 1 ? "" : "s"}`;
const none = (text = "—") => h("span.muted", {}, text);

function lastRetention(run) {
  if (!run) return none("not run yet");
  const dropped = run.dropped.length
    ? h("span", { title: run.dropped.join(", ") }, `dropped ${plural(run.dropped.length, "partition")} (${fmtBytes(run.bytes)})`)
    : "nothing dropped";
  return [ago(run.ran_at), " · ", dropped];
}

function tierRow(tier) {
  return h(
    "tr",
    {},
    h("td", {}, h("strong", {}, TIERS[tier.tier] || tier.tier)),
    h("td", {}, tier.retention_days ? plural(tier.retention_days, "day") : "for good"),
    h("td.num.hide-narrow", {}, tier.partitions.toLocaleString()),
    h("td.num", {}, fmtBytes(tier.bytes)),
    h("td.num.hide-narrow", {}, tier.rows.toLocaleString()),
    h("td.hide-narrow", {}, tier.oldest ? `${tier.oldest} – ${tier.newest}` : none()),
    h("td", {}, lastRetention(tier.last_retention)),
  );
}

function databaseCard(storage) {
  const { disk, growth_bytes_per_day: growth, days_until_full: days } = storage;
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h(
    "section.card",
    { "aria-labelledby": "database-title" },
    h("h2", { id: "database-title" }, "Database"),
    h(
      "dl.props",
      {},
      row("Size", fmtBytes(storage.database_bytes)),
      row("Disk", disk ? `${fmtBytes(disk.free_bytes)} free of ${fmtBytes(disk.total_bytes)}` : none()),
      row("Growth", growth === null ? none() : `${fmtBytes(growth)} a day`),
      row("Full in", days === null ? none(storage.why_no_estimate) : `about ${plural(Math.round(days), "day")}`),
    ),
  );
}

function tiersCard(tiers) {
  const columns = [
    "Tier", "Kept for", { label: "Partitions", className: "num hide-narrow" }, { label: "Size", className: "num" },
    { label: "Rows (estimate)", className: "num hide-narrow" }, { label: "Days", className: "hide-narrow" },
    "Last retention run",
  ];
  return h(
    "section.card",
    { "aria-labelledby": "tiers-title" },
    h("h2", { id: "tiers-title" }, "Tiers"),
    h("div.table-wrap", {}, h("table.data", { "aria-label": "Tiers" },
      h("thead", {}, h("tr", {}, columns.map(headCell))),
      h("tbody", {}, tiers.map(tierRow)))),
  );
}

function devicesTable(top) {
  if (!top) return empty("The worker has not measured yet", "It counts each device's points once an hour.");
  if (!top.devices.length) return empty("No points stored yet");
  return h("div.table-wrap", {}, h("table.data", { "aria-label": "Devices by points" },
    h("thead", {}, h("tr", {}, ["Device", { label: "Points", className: "num" }].map(headCell))),
    h("tbody", {}, top.devices.map((device) => h(
      "tr",
      {},
      h("td.mono", {}, h("a", { href: `#/devices/${encodeURIComponent(device.device_id)}` }, device.device_id)),
      h("td.num", {}, device.points.toLocaleString()),
    )))));
}

function devicesCard(top) {
  return h(
    "section.card",
    { "aria-labelledby": "devices-title" },
    h(
      "div.card-head",
      {},
      h("h2", { id: "devices-title" }, "Busiest devices"),
      top ? h("div.muted", {}, "measured ", ago(top.measured_at), top.since ? ` · points since ${top.since}` : null) : null,
    ),
    devicesTable(top),
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Storage");
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Storage"),
        h("div.sub", {}, "How much telemetry fieldline keeps, in each tier and for each device, and when the disk fills.")),
    ),
  );
  let storage;
  try {
    storage = await api("GET", "/api/v1/storage");
  } catch (error) {
    main.append(h("div.alert", { role: "alert" }, `Storage could not be loaded: ${error.message}`));
    return;
  }
  main.append(h("div.stack", {}, databaseCard(storage), tiersCard(storage.tiers), devicesCard(storage.top_devices)));
}
