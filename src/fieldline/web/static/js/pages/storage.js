// Storage: how big the database is, per tier and per device, and when its disk fills.
//
// Sizes are read when the page opens; points per device and the growth come from the
// worker's hourly measurement (docs/data.md, "How much is stored").

import { api } from "../api.js";
import { ago, empty, fmtBytes, fmtTime, h } from "../dom.js";
import { headCell } from "../paged.js";

// The tiers of docs/data.md, in the API's order.
const TIERS = { raw: "Raw points", hourly: "Hourly rollups", daily: "Daily rollups" };

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

// The Parquet archive (docs/data.md, "The Parquet archive"): where, how much, last run.
function archiveCard(archive) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const head = h("h2", { id: "archive-title" }, "Archive");
  if (!archive) {
    return h("section.card", { "aria-labelledby": "archive-title" }, head,
      h("p.muted", {}, "No archive: set FIELDLINE_ARCHIVE_URL to a directory or s3://bucket/prefix, ",
        "and closed hours of raw points are kept as Parquet files, retention dropping them only once archived."));
  }
  const run = archive.last_run;
  let last = none("not run yet");
  if (run) {
    last = run.error
      ? h("span", {}, ago(run.ran_at), " · ", h("span.badge.bad", {}, "failed"), " ", run.error)
      : h("span", {}, ago(run.ran_at), ` · wrote ${plural(run.files, "file")}`);
  }
  return h(
    "section.card",
    { "aria-labelledby": "archive-title" },
    head,
    h(
      "dl.props",
      {},
      row("Location", h("span.mono", {}, archive.location)),
      row("Holds", `${plural(archive.hours, "hour")} · ${plural(archive.points, "point")} · ${fmtBytes(archive.bytes)}`),
      row("Hours", archive.oldest_hour ? `${fmtTime(archive.oldest_hour)} – ${fmtTime(archive.newest_hour)}` : none()),
      row("Last run", last),
    ),
  );
}

// Backups (docs/data.md, "Backups"): how old the last one is, and the last restore that
// proved one (the worker verifies each backup in a scratch database).
function backupsCard(backups) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const taken = backups.last_backup;
  const checked = backups.last_verification;
  let verified = backups.last_verified_at ? ago(backups.last_verified_at) : none("never");
  if (checked && !checked.ok) {
    verified = h("span", {}, verified, " · ", h("span.badge.bad", {}, "last verification failed"), " ",
      ago(checked.verified_at), `: ${checked.problem}`);
  }
  return h(
    "section.card",
    { "aria-labelledby": "backups-title" },
    h("h2", { id: "backups-title" }, "Backups"),
    h(
      "dl.props",
      {},
      row("Location", h("span.mono", {}, backups.location)),
      row("Last backup", taken
        ? h("span", {}, ago(taken.finished_at), ` · ${fmtBytes(taken.bytes)} · `, h("span.mono", {}, taken.id))
        : none("none yet: the worker takes one a day once the instance is a day old, and fieldline backup create takes one now")),
      row("Last verified restore", verified),
    ),
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
  main.append(h(
    "div.stack",
    {},
    databaseCard(storage),
    tiersCard(storage.tiers),
    archiveCard(storage.archive),
    devicesCard(storage.top_devices),
    backupsCard(storage.backups),
  ));
}
