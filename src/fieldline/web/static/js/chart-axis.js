// The chart's two axes: round value ticks and calendar-aligned time ticks, and the
// labels both axes and the tooltip use. Split from chart.js, which draws.

import { activeZone, fmtClock, fmtDate, fmtDateTimeZoned, fromWallClock, wallClock } from "./time.js";

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

// ---- value axis ------------------------------------------------------------

// Round step of 1, 2 or 5 × 10^k giving about `count` intervals over `span`.
const niceStep = (span, count) => {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return mag * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10);
};

export const valueScale = (lo, hi, count) => {
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.1 || 1;
  // Non-negative series (counts, percentages) should not get a negative axis.
  const low = lo >= 0 ? Math.max(0, lo - pad) : lo - pad;
  const step = niceStep(hi + pad - low, count);
  const min = Math.floor(low / step) * step;
  const max = Math.ceil((hi + pad) / step) * step;
  const ticks = [];
  // Multiply rather than accumulate so float error cannot drift across ticks.
  for (let i = 0; min + i * step <= max + step / 2; i++) ticks.push(min + i * step);
  return { min, max, ticks, label: tickLabeller(step, Math.max(-min, max)) };
};

// Large axes read better as 250k / 1.5M than as long digit runs.
const SI = [[1e9, "G"], [1e6, "M"], [1e4, "k"]];

const tickLabeller = (step, maxAbs) => {
  const [div, suffix] = SI.find(([d]) => maxAbs >= d) ?? [1, ""];
  const scale = div === 1e4 ? 1e3 : div;
  const decimals = Math.max(0, -Math.floor(Math.log10(step / scale) + 1e-9));
  return (v) => {
    const x = Math.abs(v) < step / 2 ? 0 : v / scale; // snaps float noise, avoids "-0"
    if (!suffix) return x.toFixed(decimals);
    return x === 0 ? "0" : `${Number(x.toFixed(decimals))}${suffix}`;
  };
};

// At most three decimals, fewer as the magnitude grows; trailing zeros dropped.
export const formatValue = (v) => {
  if (v === 0) return "0";
  const decimals = clamp(3 - Math.floor(Math.log10(Math.abs(v))), 0, 3);
  return String(Number(v.toFixed(decimals)));
};

// ---- time axis -------------------------------------------------------------

// Ticks are computed on the wall clock of the zone shown (time.js), so they land on
// round times there even in zones with half-hour offsets and across DST changes.

const UNIT_MS = { second: SEC, minute: MIN, hour: HOUR, day: DAY, month: 30 * DAY, year: 365 * DAY };
// The wall-clock fields below each unit, reset when flooring to it.
const FINER = {
  second: [], minute: ["second"], hour: ["minute", "second"], day: ["hour", "minute", "second"],
  month: ["day", "hour", "minute", "second"], year: ["month", "day", "hour", "minute", "second"],
};
const FIELD_START = { month: 1, day: 1, hour: 0, minute: 0, second: 0 };

const TIME_STEPS = [
  ["second", 1], ["second", 2], ["second", 5], ["second", 10], ["second", 15], ["second", 30],
  ["minute", 1], ["minute", 2], ["minute", 5], ["minute", 10], ["minute", 15], ["minute", 30],
  ["hour", 1], ["hour", 2], ["hour", 3], ["hour", 6], ["hour", 12],
  ["day", 1], ["day", 7], ["month", 1], ["month", 3], ["month", 6],
  ["year", 1], ["year", 2], ["year", 5], ["year", 10], ["year", 25], ["year", 100],
];

const floorTime = (t, unit, n, zone) => {
  const w = wallClock(t, zone);
  for (const finer of FINER[unit]) w[finer] = FIELD_START[finer];
  if (unit === "day" && n === 7) w.day -= w.weekday - 1; // Monday
  else w[unit] -= (w[unit] - (FIELD_START[unit] ?? 0)) % n;
  return fromWallClock(w, zone);
};

const addTime = (t, unit, n, zone) => {
  // Below an hour every zone's wall clock moves with the instant; above, the wall clock
  // decides (a day across a DST change is 23 or 25 hours).
  if (UNIT_MS[unit] < HOUR) return t + n * UNIT_MS[unit];
  const w = wallClock(t, zone);
  w[unit] += n;
  // Floored again: a tick moved off its step by a skipped DST hour (02:00 → 03:00) returns to it.
  const next = floorTime(fromWallClock(w, zone), unit, n, zone);
  // A skipped DST hour can map back onto the same instant; never stall.
  return next > t ? next : t + n * UNIT_MS[unit];
};

const timeLabel = (t, unit, zone) => {
  const w = wallClock(t, zone);
  const midnight = w.hour === 0 && w.minute === 0 && w.second === 0;
  if (unit === "year" || (unit === "month" && w.month === 1)) return String(w.year);
  if (unit === "month") return fmtDate(w).slice(0, 7);
  if (unit === "day" || midnight) return fmtDate(w);
  return fmtClock(w, unit === "second");
};

export const timeTicks = (start, end, maxTicks) => {
  const zone = activeZone();
  const span = end - start;
  const [unit, n] =
    TIME_STEPS.find(([u, k]) => span / (k * UNIT_MS[u]) <= maxTicks) ?? TIME_STEPS.at(-1);
  const ticks = [];
  for (let t = floorTime(start, unit, n, zone); t <= end && ticks.length < 200; t = addTime(t, unit, n, zone)) {
    if (t >= start) ticks.push({ t, label: timeLabel(t, unit, zone) });
  }
  return ticks;
};

/** The tooltip's time: "2026-12-07 14:03:09 UTC", its zone named. */
export const formatTime = (t) => fmtDateTimeZoned(t);
