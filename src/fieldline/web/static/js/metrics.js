// What a metric is, for people (GET /devices/{id}/metric-metadata): its display name,
// unit, decimals and, for booleans and enums, the label of each value. A metric without
// an entry is shown by its name, its values as numbers.

import { fmtNumber } from "./dom.js";

/** metadata list → Map(metric → entry) */
export function byMetric(items) {
  return new Map((items || []).map((item) => [item.metric, item]));
}

export function metricName(meta, metric) {
  return (meta && meta.display_name) || metric;
}

/** A value as the metadata says: its label, or the number to its decimals with its unit. */
export function fmtMetric(meta, value) {
  if (!meta) return fmtNumber(value);
  const key = String(value); // 1 → "1", 2.5 → "2.5": the API's label keys
  if (meta.labels && key in meta.labels) return meta.labels[key];
  if (meta.kind === "boolean" && (value === 0 || value === 1)) return value ? "true" : "false";
  const number = meta.decimals === null || meta.decimals === undefined
    ? fmtNumber(value)
    : value.toLocaleString(undefined, { minimumFractionDigits: meta.decimals, maximumFractionDigits: meta.decimals });
  return meta.unit ? `${number} ${meta.unit}` : number;
}

/** A chart's or a column's title: the display name, and the unit in parentheses. */
export function metricTitle(meta, metric) {
  const name = metricName(meta, metric);
  return meta && meta.unit ? `${name} (${meta.unit})` : name;
}

/** The entry a device of `deviceType` uses for `metric` (GET /metric-metadata's items): its type's, else "*"'s, else null. */
export function metaFor(entries, deviceType, metric) {
  let fallback = null;
  for (const entry of entries || []) {
    if (entry.metric !== metric) continue;
    if (entry.device_type === deviceType) return entry;
    if (entry.device_type === "*") fallback = entry;
  }
  return fallback;
}

/** What each kind means for how a metric is shown, for the people choosing one. */
export const KINDS = {
  number: "a value drawn as a line chart",
  boolean: "0 or 1, drawn as a state timeline; labels name the two states",
  enum: "a few numeric values with a label each, drawn as a state timeline",
  latitude: "with a longitude of the same device: its position on a map",
  longitude: "with a latitude of the same device: its position on a map",
};
