// Time-series chart as one inline SVG. Every data or size change redraws the
// static layer from scratch: a series is a single path string, so even
// thousands of points cost only a few milliseconds and no diffing is needed.
//
// One chart draws one series (setData), several on a shared time axis (setSeries:
// devices compared, a second metric on a right-hand axis, a group's min–max range),
// or states (booleans and enums as coloured runs). Charts given the same `sync`
// (createSync) show one crosshair: hovering one shows the time on all.

import { formatTime, formatValue, timeTicks, valueScale } from "./chart-axis.js";

export { formatTime, formatValue };

const SVG_NS = "http://www.w3.org/2000/svg";
const MARGIN = { top: 12, right: 24, bottom: 26 };
const MAX_DOTS = 60;
const DRAG_MIN_PX = 5;
const GAP_BUCKETS = 2.5;
const HOUR = 3600 * 1000;

// clipPath ids must be unique in the document when several charts share a page.
let nextId = 0;

const setAttrs = (node, attrs) => {
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
};

const svgEl = (name, attrs = {}, parent = null) => {
  const node = setAttrs(document.createElementNS(SVG_NS, name), attrs);
  if (parent) parent.appendChild(node);
  return node;
};

const htmlEl = (name, className, parent = null) => {
  const node = document.createElement(name);
  node.className = className;
  if (parent) parent.appendChild(node);
  return node;
};

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

// ---- series ----------------------------------------------------------------

// Line and area as path strings; a gap (or a non-finite value) starts a new
// subpath. A lone point gets a zero-length segment so round caps show it.
const seriesPaths = (points, gapMs, x, y, base) => {
  const line = [];
  const area = [];
  let run = [];
  const flush = () => {
    if (!run.length) return;
    const [x0, y0] = run[0];
    const rest = run.slice(1).map(([px, py]) => `L${px},${py}`).join("");
    line.push(`M${x0},${y0}${rest || "l0,0"}`);
    area.push(`M${x0},${base}L${x0},${y0}${rest}L${run.at(-1)[0]},${base}Z`);
    run = [];
  };
  let prevT = -Infinity;
  for (const { t, v } of points) {
    if (!Number.isFinite(v) || t - prevT > gapMs) flush();
    if (Number.isFinite(v)) run.push([x(t).toFixed(1), y(v).toFixed(1)]);
    prevT = t;
  }
  flush();
  return { line: line.join(""), area: area.join("") };
};

// [min, max] of the finite values (and lo/hi of a range) whose time passes `keep`;
// [Inf, -Inf] if none.
const extent = (points, keep, range = false) => {
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (!keep(p.t)) continue;
    for (const v of range ? [p.v, p.lo, p.hi] : [p.v]) {
      if (!Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return [lo, hi];
};

// Index of the point whose time is closest to t (points sorted by t).
const nearestIndex = (points, t) => {
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid].t <= t) lo = mid;
    else hi = mid;
  }
  return Math.abs(points[hi].t - t) < Math.abs(points[lo].t - t) ? hi : lo;
};

// The area between each point's lo and hi (a group's min and max), broken at gaps.
const rangePath = (points, gapMs, x, y) => {
  const parts = [];
  let run = [];
  const flush = () => {
    if (run.length) {
      const top = run.map((p) => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
      const bottom = run.map((p) => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`).reverse();
      parts.push(`M${top.join("L")}L${bottom.join("L")}Z`);
    }
    run = [];
  };
  let prevT = -Infinity;
  for (const p of points) {
    const ok = Number.isFinite(p.lo) && Number.isFinite(p.hi);
    if (!ok || p.t - prevT > gapMs) flush();
    if (ok) run.push(p);
    prevT = p.t;
  }
  flush();
  return parts.join("");
};

const COLOURS = 10; // .s0 … .s9 in chart.css

/** A crosshair shared by charts: hovering one shows the same time on the others. */
export const createSync = () => {
  const charts = new Set();
  return {
    join(chart) {
      charts.add(chart);
      return () => charts.delete(chart);
    },
    emit(from, t) {
      for (const chart of charts) if (chart !== from) chart.showAt(t);
    },
  };
};

// ---- the component ---------------------------------------------------------

export const createChart = (container, { label = "", height = 220, onZoom = null, sync = null } = {}) => {
  const clipId = `chart-clip-${++nextId}`;
  const root = htmlEl("div", "chart-root", container);
  const svg = svgEl("svg", { class: "chart", role: "img", "aria-label": `${label} chart` }, root);
  const clipRect = svgEl("rect", {}, svgEl("clipPath", { id: clipId }, svgEl("defs", {}, svg)));
  const layer = svgEl("g", {}, svg);
  const crosshair = svgEl("line", { class: "chart-crosshair", visibility: "hidden" }, svg);
  const selection = svgEl("rect", { class: "chart-selection", visibility: "hidden" }, svg);
  const overlay = svgEl("rect", { class: "chart-overlay" }, svg);
  const focusLayer = svgEl("g", { class: "chart-focus-layer" }, svg);
  const tooltip = htmlEl("div", "chart-tooltip", root);
  const tipValue = htmlEl("div", "chart-tooltip-value", tooltip);
  const tipTime = htmlEl("div", "chart-tooltip-time", tooltip);
  const legend = htmlEl("ul", "chart-legend", root);
  tooltip.hidden = true;
  legend.hidden = true;

  // Each series: { label, points [{t, v, lo?, hi?}], right (own axis), range (lo–hi
  // shaded), format (value → text) }. `points` is the first one's, as setData gives it.
  let series = [];
  let points = [];
  // States: { labels: { value: label } } draws runs of equal values instead of lines.
  let states = null;
  let start = 0;
  let end = 1;
  let bucketMs = 0;
  // Marks drawn under the series: shaded time bands (alert periods) and value lines (thresholds).
  let bands = [];
  let lines = [];
  let loaded = false; // until the first setData there is no domain to label
  let width = container.clientWidth;
  // Geometry of the last render, reused by pointer handlers.
  let plot = { x: 0, y: 0, w: 1, h: 1 };
  let yOf = () => 0;
  const xOf = (t) => plot.x + ((t - start) / (end - start)) * plot.w;
  const timeAt = (px) => start + ((px - plot.x) / plot.w) * (end - start);

  let rightOf = () => 0;
  let rightScale = null;

  const render = () => {
    layer.replaceChildren();
    setAttrs(svg, { width, height, viewBox: `0 0 ${width} ${height}` });
    svg.setAttribute("data-points", series.reduce((n, one) => n + one.points.length, 0));
    svg.setAttribute("data-series", series.length);
    if (loaded) setAttrs(svg, { "data-start": start, "data-end": end });
    const plotH = height - MARGIN.top - MARGIN.bottom;
    const ticks = Math.max(2, Math.round(plotH / 45));
    const scaleOf = (chosen, withLines) => {
      const visible = (t) => t >= start && t <= end;
      let [lo, hi] = [Infinity, -Infinity];
      for (const keep of [visible, () => true]) {
        for (const one of chosen) {
          const [a, b] = extent(one.points, keep, one.range);
          [lo, hi] = [Math.min(lo, a), Math.max(hi, b)];
        }
        if (lo <= hi) break; // scale to what is visible; everything if nothing is
      }
      // A threshold the data never reaches must still be on the scale, or it is not drawn.
      for (const { value } of withLines ? lines : []) {
        if (Number.isFinite(value)) [lo, hi] = [Math.min(lo, value), Math.max(hi, value)];
      }
      return lo <= hi ? valueScale(lo, hi, ticks) : null;
    };
    const scale = states ? null : scaleOf(series.filter((one) => !one.right), true);
    rightScale = states ? null : scaleOf(series.filter((one) => one.right), false);
    const yLabels = scale ? scale.ticks.map(scale.label) : [];
    const rightLabels = rightScale ? rightScale.ticks.map(rightScale.label) : [];
    // Margins sized to the widest y label (~6.5 px per 11 px glyph).
    const widest = (labels) => Math.max(0, ...labels.map((text) => text.length));
    const left = states ? 12 : Math.round(Math.max(32, 14 + 6.5 * widest(yLabels)));
    const right = rightScale ? Math.round(Math.max(32, 14 + 6.5 * widest(rightLabels))) : MARGIN.right;
    plot = { x: left, y: MARGIN.top, w: Math.max(1, width - left - right), h: plotH };
    const bottom = plot.y + plot.h;
    const along = (s) => (v) => bottom - ((v - s.min) / (s.max - s.min)) * plot.h;
    yOf = scale ? along(scale) : () => 0;
    rightOf = rightScale ? along(rightScale) : () => 0;

    const plotRect = { x: plot.x, y: plot.y, width: plot.w, height: plot.h };
    setAttrs(clipRect, plotRect);
    setAttrs(overlay, plotRect);
    drawAxes(scale, yLabels, rightLabels);
    const drawn = states ? points.length > 0 : series.some((one) => one.points.length) && (scale || rightScale);
    if (loaded && (scale || states)) drawMarks();
    if (drawn && states) drawStates();
    else if (drawn) drawSeries();
    else if (loaded) {
      const center = { x: plot.x + plot.w / 2, y: plot.y + plot.h / 2 };
      const empty = svgEl("text", { class: "chart-empty", ...center }, layer);
      empty.textContent = "No data in this range";
    }
  };

  const drawAxes = (scale, yLabels, rightLabels) => {
    const grid = svgEl("g", { class: "chart-grid" }, layer);
    const yAxis = svgEl("g", { class: "chart-axis chart-axis-y" }, layer);
    const xAxis = svgEl("g", { class: "chart-axis chart-axis-x" }, layer);
    const right = plot.x + plot.w;
    const bottom = plot.y + plot.h;
    scale?.ticks.forEach((v, i) => {
      const y = yOf(v).toFixed(1);
      svgEl("line", { x1: plot.x, x2: right, y1: y, y2: y }, grid);
      svgEl("text", { x: plot.x - 8, y, dy: "0.35em" }, yAxis).textContent = yLabels[i];
    });
    if (rightScale) {
      const axis = svgEl("g", { class: "chart-axis chart-axis-right" }, layer);
      rightScale.ticks.forEach((v, i) => {
        svgEl("text", { x: right + 8, y: rightOf(v).toFixed(1), dy: "0.35em" }, axis).textContent = rightLabels[i];
      });
    }
    const frame = { class: "chart-axis-line", x1: plot.x, y2: bottom };
    svgEl("line", { ...frame, x2: right, y1: bottom }, layer);
    svgEl("line", { ...frame, x2: plot.x, y1: plot.y }, layer);
    if (!loaded) return;
    // About one label per 90 px keeps even "HH:MM:SS" labels apart.
    for (const { t, label: text } of timeTicks(start, end, Math.max(2, Math.floor(plot.w / 90)))) {
      const x = xOf(t);
      // Drop a label that would be cut off at the svg's edge.
      if (x - text.length * 3.3 < 0 || x + text.length * 3.3 > width) continue;
      svgEl("line", { x1: x, x2: x, y1: bottom, y2: bottom + 4 }, xAxis);
      svgEl("text", { x, y: bottom + 16 }, xAxis).textContent = text;
    }
  };

  const drawMarks = () => {
    const marks = svgEl("g", { class: "chart-marks", "clip-path": `url(#${clipId})` }, layer);
    for (const band of bands) {
      const x1 = clamp(xOf(band.start), plot.x, plot.x + plot.w);
      const x2 = clamp(xOf(band.end ?? end), plot.x, plot.x + plot.w);
      if (x2 <= x1 && band.end !== null) continue;
      const rect = { x: x1, y: plot.y, width: Math.max(2, x2 - x1), height: plot.h, "data-start": band.start };
      const shaded = svgEl("rect", { class: `chart-band ${band.className || ""}`, ...rect }, marks);
      if (band.label) svgEl("title", {}, shaded).textContent = band.label;
    }
    for (const line of lines) {
      const y = yOf(line.value).toFixed(1);
      svgEl("line", { class: "chart-threshold", x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y, "data-value": line.value }, marks);
      if (line.label) {
        const text = svgEl("text", { class: "chart-threshold-label", x: plot.x + plot.w - 4, y, dy: "-0.35em" }, marks);
        text.textContent = line.label;
      }
    }
  };

  const drawSeries = () => {
    const gapMs = bucketMs > 0 ? GAP_BUCKETS * bucketMs : Infinity;
    const clip = svgEl("g", { "clip-path": `url(#${clipId})` }, layer);
    const single = series.length === 1;
    series.forEach((one, i) => {
      const y = one.right ? rightOf : yOf;
      const group = svgEl("g", { class: `chart-series s${i % COLOURS}`, "data-label": one.label }, clip);
      if (one.range) svgEl("path", { class: "chart-range", d: rangePath(one.points, gapMs, xOf, y) }, group);
      const paths = seriesPaths(one.points, gapMs, xOf, y, plot.y + plot.h);
      // One series is filled beneath; several would hide each other.
      if (single && !one.range) svgEl("path", { class: "chart-area", d: paths.area }, group);
      svgEl("path", { class: "chart-line", d: paths.line }, group);
      if (!single || one.points.length > MAX_DOTS) return;
      const dots = svgEl("g", { class: "chart-dots" }, group);
      for (const { t, v } of one.points) {
        if (Number.isFinite(v)) svgEl("circle", { cx: xOf(t), cy: y(v), r: 2.5 }, dots);
      }
    });
  };

  // Runs of one state: each value holds from its time to the next value's (or the end
  // of its bucket, at a gap), coloured by its place among the labelled values.
  const stateText = (v) => (states.labels && states.labels[String(v)]) ?? formatValue(v);
  const drawStates = () => {
    const keys = Object.keys(states.labels || {});
    // A state holds until the next reading, unless the device fell silent: a gap longer
    // than a few of its usual intervals (or buckets) ends the run.
    const steps = points.slice(1).map((p, i) => p.t - points[i].t).sort((a, b) => a - b);
    const usual = steps.length ? steps[steps.length >> 1] : 0;
    const gapMs = Math.max(GAP_BUCKETS * bucketMs, 3 * usual) || Infinity;
    const clip = svgEl("g", { class: "chart-states", "clip-path": `url(#${clipId})` }, layer);
    const runs = [];
    points.forEach((p, i) => {
      if (!Number.isFinite(p.v)) return;
      const next = points[i + 1];
      const until = next && next.t - p.t <= gapMs ? next.t : p.t + (bucketMs || 0);
      const last = runs.at(-1);
      if (last && last.v === p.v && last.end >= p.t) last.end = until;
      else runs.push({ v: p.v, start: p.t, end: until });
    });
    for (const run of runs) {
      const x1 = clamp(xOf(run.start), plot.x, plot.x + plot.w);
      const x2 = clamp(xOf(run.end), plot.x, plot.x + plot.w);
      if (x2 <= x1 && run.end > run.start) continue;
      const place = keys.indexOf(String(run.v));
      const colour = place >= 0 ? place : Math.abs(Math.round(run.v));
      const text = stateText(run.v);
      const rect = svgEl("rect", {
        class: `chart-state st${colour % COLOURS}`,
        x: x1, y: plot.y, width: Math.max(1, x2 - x1), height: plot.h, "data-state": text,
      }, clip);
      svgEl("title", {}, rect).textContent = text;
      if (x2 - x1 > text.length * 6.5 + 8) {
        const label = svgEl("text", { class: "chart-state-label", x: x1 + 4, y: plot.y + plot.h / 2, dy: "0.35em" }, clip);
        label.textContent = text;
      }
    }
  };

  const renderLegend = () => {
    legend.hidden = series.length < 2;
    legend.replaceChildren();
    if (legend.hidden) return;
    series.forEach((one, i) => {
      const item = htmlEl("li", `s${i % COLOURS}`, legend);
      htmlEl("span", "chart-swatch", item);
      item.append(one.right ? `${one.label} (right axis)` : one.label);
    });
  };

  // ---- hover and drag-to-zoom ----

  const show = (node, on) => node.setAttribute("visibility", on ? "visible" : "hidden");

  const hideHover = () => {
    show(crosshair, false);
    focusLayer.replaceChildren();
    tooltip.hidden = true;
  };

  // Keep the tooltip beside the crosshair, flipping left near the right edge.
  const placeTip = (x) => {
    tooltip.hidden = false;
    const tipW = tooltip.offsetWidth;
    tooltip.style.left = `${Math.max(0, x + 12 + tipW > width ? x - 12 - tipW : x + 12)}px`;
    tooltip.style.top = `${plot.y + 4}px`;
  };

  // The crosshair at time t (this chart's pointer, or another's through `sync`).
  const showAt = (t) => {
    if (t === null || !loaded) return hideHover();
    if (states) return showState(t);
    // Snap to the nearest point of any series, then read each series there.
    let best = null;
    for (const one of series) {
      if (!one.points.length) continue;
      const p = one.points[nearestIndex(one.points, t)];
      if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    }
    if (!best) return hideHover();
    const x = xOf(best.t);
    if (x < plot.x || x > plot.x + plot.w) return hideHover();
    setAttrs(crosshair, { x1: x, x2: x, y1: plot.y, y2: plot.y + plot.h });
    show(crosshair, true);
    focusLayer.replaceChildren();
    tipValue.replaceChildren();
    series.forEach((one, i) => {
      if (!one.points.length) return;
      const p = one.points[nearestIndex(one.points, best.t)];
      if (p.t !== best.t || !Number.isFinite(p.v)) return;
      const text = states ? stateText(p.v) : (one.format || formatValue)(p.v);
      const extra = one.range && Number.isFinite(p.lo) ? ` (${(one.format || formatValue)(p.lo)} – ${(one.format || formatValue)(p.hi)})` : "";
      const line = htmlEl("div", `chart-tooltip-row s${i % COLOURS}`, tipValue);
      if (series.length > 1) htmlEl("span", "chart-swatch", line);
      line.append(series.length > 1 ? `${one.label}: ${text}${extra}` : `${text}${extra}`);
      if (!states) {
        svgEl("circle", { class: `chart-focus s${i % COLOURS}`, r: 4, cx: x, cy: (one.right ? rightOf : yOf)(p.v) }, focusLayer);
      }
    });
    tipTime.textContent = formatTime(best.t);
    placeTip(x);
    return undefined;
  };

  // A state holds from its time until the next: the one shown is the last before t.
  const showState = (t) => {
    const i = points.length ? nearestIndex(points, t) : -1;
    const at = i >= 0 && points[i].t > t ? i - 1 : i;
    const x = xOf(t);
    if (at < 0 || x < plot.x || x > plot.x + plot.w || !Number.isFinite(points[at].v)) return hideHover();
    setAttrs(crosshair, { x1: x, x2: x, y1: plot.y, y2: plot.y + plot.h });
    show(crosshair, true);
    tipValue.textContent = stateText(points[at].v);
    tipTime.textContent = formatTime(points[at].t);
    placeTip(x);
    return undefined;
  };

  const hover = (px) => {
    const t = timeAt(px);
    showAt(t);
    if (sync) sync.emit(self, t);
  };

  let dragFrom = null;
  const localX = (e) => {
    const x = e.clientX - svg.getBoundingClientRect().left;
    return clamp(x, plot.x, plot.x + plot.w);
  };

  const onDown = (e) => {
    if (e.button !== 0) return;
    overlay.setPointerCapture(e.pointerId);
    dragFrom = localX(e);
    hover(dragFrom);
  };

  const onMove = (e) => {
    const x = localX(e);
    hover(x);
    if (dragFrom === null) return;
    const from = dragFrom;
    const span = { x: Math.min(x, from), width: Math.abs(x - from) };
    setAttrs(selection, { ...span, y: plot.y, height: plot.h });
    show(selection, true);
  };

  const onUp = (e) => {
    if (dragFrom === null) return;
    const [a, b] = [dragFrom, localX(e)].sort((p, q) => p - q);
    dragFrom = null;
    show(selection, false);
    if (b - a > DRAG_MIN_PX && onZoom) onZoom(Math.round(timeAt(a)), Math.round(timeAt(b)));
  };

  const onCancel = () => {
    dragFrom = null;
    show(selection, false);
    hideHover();
  };

  // A finger lifting "leaves" the element; keep its tooltip up until the next touch.
  const onLeave = (e) => {
    if (e.pointerType === "touch" || dragFrom !== null) return;
    hideHover();
    if (sync) sync.emit(self, null);
  };

  const listeners = {
    pointerdown: onDown,
    pointermove: onMove,
    pointerup: onUp,
    pointercancel: onCancel,
    pointerleave: onLeave,
  };
  for (const [type, fn] of Object.entries(listeners)) overlay.addEventListener(type, fn);

  const resizer = new ResizeObserver(([entry]) => {
    const w = Math.round(entry.contentRect.width);
    if (w === width) return;
    width = w;
    hideHover();
    render();
  });
  resizer.observe(container);
  render();

  const self = {
    // bands: [{ start, end (ms; null = still open), label, className }]; lines: [{ value, label }].
    setData(data, options = {}) {
      self.setSeries([{ label, points: Array.isArray(data) ? data : [], format: options.format }], options);
    },
    // list: [{ label, points, right, range, format }]; states: { labels } draws the first
    // series as a state timeline.
    setSeries(list, { start: s, end: e, bucketMs: b, bands: shaded = [], lines: ruled = [], states: st = null } = {}) {
      series = list.map((one) => ({ ...one, points: Array.isArray(one.points) ? one.points : [] }));
      points = series[0]?.points ?? [];
      const times = series.flatMap((one) => (one.points.length ? [one.points[0].t, one.points.at(-1).t] : []));
      start = s ?? (times.length ? Math.min(...times) : Date.now() - HOUR);
      end = e ?? (times.length ? Math.max(...times) : Date.now());
      if (!(end > start)) end = start + 1; // keep the x scale finite
      bucketMs = b || 0;
      bands = shaded;
      lines = ruled;
      states = st;
      loaded = true;
      svg.classList.toggle("chart-multi", series.length > 1);
      hideHover();
      renderLegend();
      render();
    },
    showAt,
    destroy() {
      for (const [type, fn] of Object.entries(listeners)) overlay.removeEventListener(type, fn);
      resizer.disconnect();
      leaveSync();
      root.remove();
    },
  };
  const leaveSync = sync ? sync.join(self) : () => {};
  return self;
};
