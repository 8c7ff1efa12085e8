// The chart's two axes: round value ticks and calendar-aligned time ticks, and the
// labels both axes and the tooltip use. Split from chart.js, which draws.

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const pad2 = (n) => String(n).padStart(2, "0");

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

// Ticks are computed on local calendar fields so they land on round local
// times even in zones with half-hour offsets and across DST changes.
const toMidnight = (d) => d.setHours(0, 0, 0, 0);
const toMonthStart = (d) => {
  toMidnight(d);
  d.setDate(1);
};
const toYearStart = (d) => {
  toMonthStart(d);
  d.setMonth(0);
};

const UNITS = {
  second: { ms: SEC, field: "Seconds", reset: (d) => d.setMilliseconds(0) },
  minute: { ms: MIN, field: "Minutes", reset: (d) => d.setSeconds(0, 0) },
  hour: { ms: HOUR, field: "Hours", reset: (d) => d.setMinutes(0, 0, 0) },
  day: { ms: DAY, field: "Date", reset: toMidnight },
  month: { ms: 30 * DAY, field: "Month", reset: toMonthStart },
  year: { ms: 365 * DAY, field: "FullYear", reset: toYearStart },
};

const TIME_STEPS = [
  ["second", 1], ["second", 2], ["second", 5], ["second", 10], ["second", 15], ["second", 30],
  ["minute", 1], ["minute", 2], ["minute", 5], ["minute", 10], ["minute", 15], ["minute", 30],
  ["hour", 1], ["hour", 2], ["hour", 3], ["hour", 6], ["hour", 12],
  ["day", 1], ["day", 7], ["month", 1], ["month", 3], ["month", 6],
  ["year", 1], ["year", 2], ["year", 5], ["year", 10], ["year", 25], ["year", 100],
];

const floorTime = (t, unit, n) => {
  const d = new Date(t);
  const { field, reset } = UNITS[unit];
  reset(d);
  if (unit === "day" && n === 7) d.setDate(d.getDate() - ((d.getDay() + 6) % 7)); // Monday
  else if (unit === "day") d.setDate(d.getDate() - ((d.getDate() - 1) % n));
  else d[`set${field}`](d[`get${field}`]() - (d[`get${field}`]() % n));
  return d.getTime();
};

const addTime = (t, unit, n) => {
  const d = new Date(t);
  const { field, ms } = UNITS[unit];
  d[`set${field}`](d[`get${field}`]() + n);
  // A skipped DST hour can map back onto the same instant; never stall.
  return d.getTime() > t ? d.getTime() : t + n * ms;
};

const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const monthFormat = new Intl.DateTimeFormat(undefined, { month: "short" });
const hhmm = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
const hhmmss = (d) => `${hhmm(d)}:${pad2(d.getSeconds())}`;

const timeLabel = (t, unit) => {
  const d = new Date(t);
  const midnight = d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0;
  if (unit === "year" || (unit === "month" && d.getMonth() === 0)) return String(d.getFullYear());
  if (unit === "month") return monthFormat.format(d);
  if (unit === "day" || midnight) return dateFormat.format(d);
  return unit === "second" ? hhmmss(d) : hhmm(d);
};

export const timeTicks = (start, end, maxTicks) => {
  const span = end - start;
  const [unit, n] =
    TIME_STEPS.find(([u, k]) => span / (k * UNITS[u].ms) <= maxTicks) ?? TIME_STEPS.at(-1);
  const ticks = [];
  for (let t = floorTime(start, unit, n); t <= end && ticks.length < 200; t = addTime(t, unit, n)) {
    if (t >= start) ticks.push({ t, label: timeLabel(t, unit) });
  }
  return ticks;
};

export const formatTime = (t) => `${dateFormat.format(new Date(t))} ${hhmmss(new Date(t))}`;
