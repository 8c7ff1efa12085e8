// Health (admins): fieldline's own processes, the worker's jobs, the checks failing now
// with their system alerts, the database, certificates and backups, as the processes'
// heartbeats tell them (GET /api/v1/system; docs/monitoring.md, "Without Prometheus").
// Asked again every heartbeat while the page is shown.

import { api } from "../api.js";
import { ago, errorBox, fill, fmtBytes, fmtDuration, fmtNumber, fmtTime, h } from "../dom.js";
import { headCell } from "../paged.js";
import { SEVERITIES, severityBadge } from "../alerts/common.js";

// Where a value turns into a concern: the thresholds of src/fieldline/domain/health.py,
// so that the tables mark what the checks above them judge.
const BACKLOG_MESSAGES = 10_000;
const LAG_P99_SECONDS = 5;
const HTTP_ERROR_SHARE = 0.05;
const HTTP_MIN_REQUESTS = 20;
const CERTIFICATE_WARN_DAYS = 30;
const CERTIFICATE_CRITICAL_DAYS = 3;
const BACKUP_LATE_HOURS = 36;
const VERIFY_LATE_DAYS = 2;
const POOL_BUSY_SHARE = 0.8;

const none = (text = "—") => h("span.muted", {}, text);
const count = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many}`;
const whole = (value) => Math.round(value).toLocaleString();
// A value marked as a worry (warn) or a fault (bad), or shown plainly.
const marked = (level, content, title) => (level
  ? h(`span.badge.${level === "bad" ? "bad" : "pending"}`, { title }, content)
  : h("span", { title }, content));

function summary(system, now) {
  const checks = [...system.checks].sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity)
    || a.key.localeCompare(b.key));
  if (!checks.length) {
    const alive = system.processes.filter((p) => p.alive).length;
    // A process down while another runs its parts fails no check, but is worth a word.
    const down = system.processes.filter((p) => stateOf(p) === "down").length;
    return h("section.health-summary.ok", { "aria-label": "Summary" }, h("strong", {}, "All healthy"),
      ` · ${count(alive, "process", "processes")} alive${down ? `, ${down} down` : ""}, no check failing`);
  }
  const worst = checks[0].severity;
  return h(
    `section.health-summary.sev-${worst}`,
    { "aria-label": "Summary" },
    h("strong", {}, `${count(checks.length, "check", "checks")} failing`),
    h("ul.health-checks", {}, checks.map((check) => h(
      "li",
      { dataset: { check: check.key } },
      severityBadge(check.severity),
      h("span.health-check-summary", {}, check.summary),
      h("span.muted", {}, "failing for ", h("time", { datetime: check.failing_since, title: `since ${fmtTime(check.failing_since)}` },
        fmtDuration((now - Date.parse(check.failing_since)) / 1000))),
      check.alert_id
        ? h("a", { href: "#/alerts", title: "Open system alerts are listed with the others" }, `Alert #${check.alert_id}`)
        : none("no alert yet"),
    ))),
  );
}

/** "alive", "stopped" (it said so in its last beat) or "down" (silent). */
const stateOf = (process) => (process.alive ? "alive" : process.stopped_at ? "stopped" : "down");
// Down first, then alive, then the stopped ones (a restart leaves its predecessor behind).
const STATE_ORDER = ["down", "alive", "stopped"];

function stateBadge(process) {
  const state = stateOf(process);
  if (state === "alive") return h("span.badge.ok", {}, state);
  if (state === "stopped") return h("span.badge", { title: `stopped cleanly ${fmtTime(process.stopped_at)}` }, state);
  return h("span.badge.bad", { title: "silent for longer than the down-after time" }, state);
}

function poolCell(pool) {
  if (!pool) return none();
  const busy = pool.size - pool.available;
  const level = pool.waiting > 0 ? "warn" : null;
  return marked(level, `${busy} of ${pool.max}${pool.waiting ? `, ${pool.waiting} waiting` : ""}`,
    `connections in use of the most it opens (${pool.size} open, ${pool.available} idle)`);
}

function ingestCells(ingest) {
  if (!ingest) return [h("td.num", {}, none()), h("td", {}, none()), h("td.num", {}, none()), h("td.num.hide-narrow", {}, none())];
  const { queue_depth: queue, broker_connected: connected, latency_p99_seconds: p99 } = ingest;
  let broker = none();
  if (connected === true) broker = h("span.badge.ok", {}, "connected");
  if (connected === false) broker = h("span.badge.bad", {}, "disconnected");
  return [
    h("td.num", {}, queue === null ? none() : marked(queue > BACKLOG_MESSAGES ? "warn" : null, whole(queue),
      "messages received and not yet written")),
    h("td", {}, broker),
    h("td.num", {}, p99 === null ? none() : marked(p99 > LAG_P99_SECONDS ? "warn" : null, `${fmtNumber(p99, 2)} s`,
      "99th percentile from receipt to commit, last 5 minutes")),
    h("td.num.hide-narrow", {}, ingest.rejected_5m === null ? none() : h("span", {}, whole(ingest.rejected_5m),
      ingest.received_5m === null ? null : h("span.muted", {}, ` of ${whole(ingest.received_5m)}`))),
  ];
}

function httpCell(http) {
  if (!http || http.requests_5m === null) return none();
  if (!http.requests_5m) return none("no requests");
  const share = (http.errors_5xx_5m || 0) / http.requests_5m;
  const level = share > HTTP_ERROR_SHARE && http.requests_5m >= HTTP_MIN_REQUESTS ? "warn" : null;
  return h("span", {}, marked(level, `${fmtNumber(share * 100, 1)}%`), h("span.muted", {}, ` of ${whole(http.requests_5m)}`));
}

function processRow(process, system, now) {
  const parts = process.role === "up" ? `up: ${process.parts.join(", ")}` : process.role;
  const version = process.version === system.api_version
    ? h("span.mono", {}, process.version)
    : marked("warn", process.version, `the API answering runs ${system.api_version}`);
  return h(
    "tr",
    { dataset: { process: process.name, state: stateOf(process) } },
    h("td", {}, stateBadge(process)),
    h("td", {}, h("strong", {}, process.name), h("div.muted", {}, parts)),
    h("td.hide-narrow", { title: `pid ${process.pid}` }, process.host),
    h("td.hide-narrow", {}, version),
    h("td.num.hide-narrow", { title: `started ${fmtTime(process.started_at)}` }, fmtDuration(process.uptime_seconds)),
    h("td", {}, ago(process.seen_at, now)),
    h("td.num.hide-narrow", {}, process.rss_bytes === null
      ? none()
      : h("span", { title: `peak resident memory${process.cpu_seconds === null ? "" : `; ${fmtNumber(process.cpu_seconds, 1)} s of CPU`}` },
        fmtBytes(process.rss_bytes))),
    h("td.num.hide-narrow", {}, poolCell(process.pool)),
    ingestCells(process.ingest),
    h("td.num", {}, httpCell(process.http)),
  );
}

function processesCard(system, now) {
  const columns = [
    "State", "Process", { label: "Host", className: "hide-narrow" }, { label: "Version", className: "hide-narrow" },
    { label: "Uptime", className: "num hide-narrow" }, "Last heard", { label: "Memory", className: "num hide-narrow" },
    { label: "Pool", className: "num hide-narrow" }, { label: "Queue", className: "num" }, "Broker",
    { label: "Lag p99", className: "num" }, { label: "Rejected", className: "num hide-narrow" },
    { label: "5xx", className: "num" },
  ];
  const processes = [...system.processes].sort((a, b) => STATE_ORDER.indexOf(stateOf(a)) - STATE_ORDER.indexOf(stateOf(b)));
  return h(
    "section.card",
    { "aria-labelledby": "processes-title" },
    h("div.card-head", {}, h("h2", { id: "processes-title" }, "Processes"),
      h("span.muted", {}, `Ingest and HTTP over the last 5 minutes · down after ${fmtDuration(system.down_after_seconds)} of silence`)),
    processes.length
      ? h("div.table-wrap", {}, h("table.data", { "aria-label": "Processes" },
        h("thead", {}, h("tr", {}, columns.map(headCell))),
        h("tbody", {}, processes.map((p) => processRow(p, system, now)))))
      : none("No process has written a heartbeat within a day."),
  );
}

const OUTCOME_BADGE = { done: "ok", skipped: "plain", failed: "bad" };
const fmtTook = (seconds) => (seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${fmtNumber(seconds, 1)} s`);

function jobRow(job, now) {
  const failed = job.outcome === "failed";
  const outcome = h(`span.badge.${OUTCOME_BADGE[job.outcome] || "plain"}`, {}, job.outcome);
  return h(
    "tr",
    { class: failed ? "concern" : null, dataset: { job: job.job, outcome: job.outcome } },
    // Long names may break after their underscores on a phone.
    h("td.mono.job-name", {}, job.job.split("_").flatMap((word, i) => (i ? ["_", h("wbr"), word] : [word]))),
    h("td", {}, outcome, failed && job.failures_in_a_row > 1 ? h("span.muted", {}, ` ${job.failures_in_a_row} in a row`) : null,
      // A phone has no room for the error column: the error goes under the outcome.
      job.error ? h("div.health-error.narrow-only", {}, job.error) : null),
    h("td", {}, ago(job.at, now)),
    h("td.num.hide-narrow", {}, fmtTook(job.seconds)),
    h("td.hide-narrow", {}, ago(job.last_done, now)),
    h("td.wrap.hide-narrow", {}, job.error ? h("span.health-error", {}, job.error) : none()),
    h("td.hide-narrow", {}, job.process),
  );
}

function jobsCard(system, now) {
  const jobs = [...system.jobs].sort((a, b) => Number(b.outcome === "failed") - Number(a.outcome === "failed")
    || a.job.localeCompare(b.job) || a.process.localeCompare(b.process));
  const columns = ["Job", "Outcome", "Last run", { label: "Took", className: "num hide-narrow" },
    { label: "Last done", className: "hide-narrow" }, { label: "Error", className: "hide-narrow" },
    { label: "Worker", className: "hide-narrow" }];
  return h(
    "section.card",
    { "aria-labelledby": "jobs-title" },
    h("h2", { id: "jobs-title" }, "Worker jobs"),
    jobs.length
      ? h("div.table-wrap", {}, h("table.data", { "aria-label": "Worker jobs" },
        h("thead", {}, h("tr", {}, columns.map(headCell))),
        h("tbody", {}, jobs.map((job) => jobRow(job, now)))))
      : none("No worker is running: the jobs' last runs show once one beats."),
  );
}

const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];

function databaseCard(system, now) {
  const { database } = system;
  // "PostgreSQL 15.6 on x86_64-pc-linux-gnu, compiled by ...": the first two words say enough.
  const short = database.version.split(" ").slice(0, 2).join(" ");
  const busy = database.connections / database.max_connections;
  return h(
    "section.card",
    { "aria-labelledby": "database-title" },
    h("h2", { id: "database-title" }, "Database"),
    h(
      "dl.props",
      {},
      row("Version", h("span", { title: database.version }, short)),
      row("Size", fmtBytes(database.bytes)),
      row("Connections", marked(busy >= POOL_BUSY_SHARE ? "warn" : null, `${database.connections} of ${database.max_connections}`)),
      row("Devices online", system.devices_online.toLocaleString()),
      row("Last telemetry", system.last_telemetry_at
        ? h("span", {}, ago(system.last_telemetry_at, now), h("span.muted", {}, ` · ${fmtTime(system.last_telemetry_at)}`))
        : none("none received yet")),
    ),
  );
}

function certificateRow(certificate, now) {
  const days = (Date.parse(certificate.expires_at) - now) / 86400e3;
  let left = `in ${fmtDuration(days * 86400)}`;
  if (days <= 0) left = "expired";
  const level = days < CERTIFICATE_CRITICAL_DAYS ? "bad" : days < CERTIFICATE_WARN_DAYS ? "warn" : null;
  return h(
    "tr",
    { class: level ? "concern" : null },
    h("td.mono.break", {}, certificate.file),
    h("td", {}, fmtTime(certificate.expires_at)),
    h("td", {}, marked(level, left)),
  );
}

function certificatesCard(system, now) {
  return h(
    "section.card",
    { "aria-labelledby": "certificates-title" },
    h("h2", { id: "certificates-title" }, "Certificates"),
    system.certificates.length
      ? h("div.table-wrap", {}, h("table.data", { "aria-label": "Certificates" },
        h("thead", {}, h("tr", {}, ["File", "Expires", "Left"].map(headCell))),
        h("tbody", {}, system.certificates.map((c) => certificateRow(c, now)))))
      : none("No MQTT TLS certificate: the worker reads the broker's certificate and its CA once TLS is on."),
  );
}

function backupsCard(system, now) {
  const { last_backup_at: taken, last_verified_at: verified } = system.backups;
  const age = (iso) => (now - Date.parse(iso)) / 1000;
  // None yet is a concern only once the instance is old enough to have one (its check says).
  const overdue = system.checks.some((check) => check.key === "backup_too_old");
  const lastBackup = taken
    ? marked(age(taken) > BACKUP_LATE_HOURS * 3600 ? "bad" : null, ago(taken, now))
    : (overdue ? marked("warn", "none yet") : none("none yet"));
  const lastVerified = verified
    ? marked(age(verified) > VERIFY_LATE_DAYS * 86400 ? "warn" : null, ago(verified, now))
    : none("never");
  return h(
    "section.card",
    { "aria-labelledby": "backups-title" },
    h("div.card-head", {}, h("h2", { id: "backups-title" }, "Backups"), h("a", { href: "#/storage" }, "Storage")),
    h("dl.props", {}, row("Last backup", lastBackup), row("Last verified restore", lastVerified)),
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Health");
  const sub = h("div.sub", {}, "fieldline's own processes, jobs and checks, as their heartbeats tell.");
  const problem = errorBox();
  const content = h("div.stack");
  main.append(h("div.page-head", {}, h("div", {}, h("h1", {}, "Health"), sub)), problem, content);

  let stopped = false;
  let timer = null;
  let controller = null;
  let every = 10;
  let shown = false;

  function draw(system) {
    const now = Date.parse(system.now); // the database's clock: what "alive" was judged by
    fill(
      content,
      summary(system, now),
      processesCard(system, now),
      jobsCard(system, now),
      h("div.grid.health-facts", {}, databaseCard(system, now), certificatesCard(system, now), backupsCard(system, now)),
    );
    fill(sub, "fieldline's own processes, jobs and checks, as their heartbeats tell: every ",
      fmtDuration(system.heartbeat_seconds), ", last at ", h("time", { datetime: system.now }, fmtTime(system.now)), ".");
    shown = true;
  }

  /** One look; answers whether to keep looking. */
  async function load() {
    controller = new AbortController();
    let system;
    try {
      system = await api("GET", "/api/v1/system", { signal: controller.signal });
    } catch (error) {
      if (stopped || error.name === "AbortError") return false;
      ctx.setLive(false);
      problem.textContent = shown ? `Could not refresh: ${error.message}` : `Health could not be loaded: ${error.message}`;
      return error.status !== 403;
    }
    if (stopped) return false;
    every = system.heartbeat_seconds;
    problem.textContent = "";
    ctx.setLive(true);
    // A link being used keeps its place: the next heartbeat redraws.
    if (!content.contains(document.activeElement)) draw(system);
    return true;
  }

  async function follow() {
    if (await load() && !stopped) timer = setTimeout(follow, every * 1000);
  }

  await follow();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
  };
}
