// A metric's history as a chart draws it: one aggregated point per bucket, the bucket
// chosen so that any range comes back as about 300 points (the device page's charts
// and a rule's preview ask the same way).

import { api } from "./api.js";

// Bucket widths the API understands, smallest first.
const BUCKETS = [
  ["1s", 1e3], ["2s", 2e3], ["5s", 5e3], ["10s", 10e3], ["30s", 30e3], ["1m", 60e3], ["2m", 120e3],
  ["5m", 300e3], ["10m", 600e3], ["15m", 900e3], ["30m", 1800e3], ["1h", 3600e3], ["2h", 7200e3],
  ["3h", 10800e3], ["6h", 21600e3], ["12h", 43200e3], ["1d", 86400e3],
];
const TARGET_POINTS = 300;

export function bucketFor(spanMs) {
  return BUCKETS.find(([, ms]) => spanMs / ms <= TARGET_POINTS) || BUCKETS[BUCKETS.length - 1];
}

/** Points { t, v } of `metric` between start and end (ms), and the bucket's width. */
export async function loadSeries(deviceId, metric, start, end, signal) {
  const [bucket, bucketMs] = bucketFor(end - start);
  const series = await api("GET", `/api/v1/devices/${encodeURIComponent(deviceId)}/telemetry`, {
    query: { metric, start: new Date(start).toISOString(), end: new Date(end).toISOString(), bucket, agg: "avg" },
    signal,
  });
  return { points: series.points.map((p) => ({ t: new Date(p.time).getTime(), v: p.value })), bucketMs };
}

/**
 * Many series in one request (GET /api/v1/series): every metric of every device named,
 * bucketed as loadSeries does, each bucket's `agg` (avg, max...). Answers
 * { bucketMs, get(deviceId, metric) → points }.
 */
export async function loadMany(deviceIds, metrics, start, end, signal, agg = "avg") {
  const [bucket, bucketMs] = bucketFor(end - start);
  const query = new URLSearchParams({ start: new Date(start).toISOString(), end: new Date(end).toISOString(), bucket, agg });
  for (const id of deviceIds) query.append("device_id", id);
  for (const metric of metrics) query.append("metric", metric);
  const answer = await api("GET", `/api/v1/series?${query}`, { signal });
  const found = new Map(answer.items.map((series) => [
    `${series.device_id}\u0000${series.metric}`,
    series.points.map((p) => ({ t: new Date(p.time).getTime(), v: p.value })),
  ]));
  return { bucketMs, get: (deviceId, metric) => found.get(`${deviceId}\u0000${metric}`) || [] };
}
