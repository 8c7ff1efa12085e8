// Time-series chart as one inline SVG. Every data or size change redraws the
// static layer from scratch: the series is a single path string, so even
// thousands of points cost only a few milliseconds and no diffing is needed.

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

// [min, max] of the finite values whose time passes `keep`; [Inf, -Inf] if none.
const extent = (points, keep) => {
  let lo = Infinity;
  let hi = -Infinity;
  for (const { t, v } of points) {
    if (!Number.isFinite(v) || !keep(t)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
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

// ---- the component ---------------------------------------------------------

export const createChart = (container, { label = "", height = 220, onZoom = null } = {}) => {
  const clipId = `chart-clip-${++nextId}`;
  const root = htmlEl("div", "chart-root", container);
  const svg = svgEl("svg", { class: "chart", role: "img", "aria-label": `${label} chart` }, root);
  const clipRect = svgEl("rect", {}, svgEl("clipPath", { id: clipId }, svgEl("defs", {}, svg)));
  const layer = svgEl("g", {}, svg);
  const crosshair = svgEl("line", { class: "chart-crosshair", visibility: "hidden" }, svg);
  const focus = svgEl("circle", { class: "chart-focus", r: 4, visibility: "hidden" }, svg);
  const selection = svgEl("rect", { class: "chart-selection", visibility: "hidden" }, svg);
  const overlay = svgEl("rect", { class: "chart-overlay" }, svg);
  const tooltip = htmlEl("div", "chart-tooltip", root);
  const tipValue = htmlEl("div", "chart-tooltip-value", tooltip);
  const tipTime = htmlEl("div", "chart-tooltip-time", tooltip);
  tooltip.hidden = true;

  let points = [];
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

  const render = () => {
    layer.replaceChildren();
    setAttrs(svg, { width, height, viewBox: `0 0 ${width} ${height}` });
    svg.setAttribute("data-points", points.length);
    if (loaded) setAttrs(svg, { "data-start": start, "data-end": end });

    // Scale to what is visible; fall back to everything if nothing is.
    let [lo, hi] = extent(points, (t) => t >= start && t <= end);
    if (lo > hi) [lo, hi] = extent(points, () => true);
    // A threshold the data never reaches must still be on the scale, or it is not drawn.
    for (const { value } of lines) {
      if (Number.isFinite(value)) [lo, hi] = [Math.min(lo, value), Math.max(hi, value)];
    }
    const plotH = height - MARGIN.top - MARGIN.bottom;
    const scale = lo <= hi ? valueScale(lo, hi, Math.max(2, Math.round(plotH / 45))) : null;
    const yLabels = scale ? scale.ticks.map(scale.label) : [];
    // Left margin sized to the widest y label (~6.5 px per 11 px glyph).
    const longest = Math.max(0, ...yLabels.map((s) => s.length));
    const left = Math.round(Math.max(32, 14 + 6.5 * longest));
    plot = { x: left, y: MARGIN.top, w: Math.max(1, width - left - MARGIN.right), h: plotH };
    const bottom = plot.y + plot.h;
    yOf = scale ? (v) => bottom - ((v - scale.min) / (scale.max - scale.min)) * plot.h : () => 0;

    const plotRect = { x: plot.x, y: plot.y, width: plot.w, height: plot.h };
    setAttrs(clipRect, plotRect);
    setAttrs(overlay, plotRect);
    drawAxes(scale, yLabels);
    if (loaded && scale) drawMarks();
    if (points.length && scale) drawSeries();
    else if (loaded) {
      const center = { x: plot.x + plot.w / 2, y: plot.y + plot.h / 2 };
      const empty = svgEl("text", { class: "chart-empty", ...center }, layer);
      empty.textContent = "No data in this range";
    }
  };

  const drawAxes = (scale, yLabels) => {
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
    const paths = seriesPaths(points, gapMs, xOf, yOf, plot.y + plot.h);
    const clip = svgEl("g", { "clip-path": `url(#${clipId})` }, layer);
    svgEl("path", { class: "chart-area", d: paths.area }, clip);
    svgEl("path", { class: "chart-line", d: paths.line }, clip);
    if (points.length > MAX_DOTS) return;
    const dots = svgEl("g", { class: "chart-dots" }, clip);
    for (const { t, v } of points) {
      if (Number.isFinite(v)) svgEl("circle", { cx: xOf(t), cy: yOf(v), r: 2.5 }, dots);
    }
  };

  // ---- hover and drag-to-zoom ----

  const show = (node, on) => node.setAttribute("visibility", on ? "visible" : "hidden");

  const hideHover = () => {
    show(crosshair, false);
    show(focus, false);
    tooltip.hidden = true;
  };

  const hover = (px) => {
    if (!points.length) return hideHover();
    const p = points[nearestIndex(points, timeAt(px))];
    const x = xOf(p.t);
    if (x < plot.x || x > plot.x + plot.w || !Number.isFinite(p.v)) return hideHover();
    setAttrs(crosshair, { x1: x, x2: x, y1: plot.y, y2: plot.y + plot.h });
    setAttrs(focus, { cx: x, cy: yOf(p.v) });
    show(crosshair, true);
    show(focus, true);
    tipValue.textContent = formatValue(p.v);
    tipTime.textContent = formatTime(p.t);
    tooltip.hidden = false;
    // Keep the tooltip beside the crosshair, flipping left near the right edge.
    const tipW = tooltip.offsetWidth;
    tooltip.style.left = `${Math.max(0, x + 12 + tipW > width ? x - 12 - tipW : x + 12)}px`;
    tooltip.style.top = `${plot.y + 4}px`;
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
  const onLeave = (e) => e.pointerType !== "touch" && dragFrom === null && hideHover();

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

  return {
    // bands: [{ start, end (ms; null = still open), label, className }]; lines: [{ value, label }].
    setData(data, { start: s, end: e, bucketMs: b, bands: shaded = [], lines: ruled = [] } = {}) {
      points = Array.isArray(data) ? data : [];
      start = s ?? points[0]?.t ?? Date.now() - HOUR;
      end = e ?? points.at(-1)?.t ?? Date.now();
      if (!(end > start)) end = start + 1; // keep the x scale finite
      bucketMs = b || 0;
      bands = shaded;
      lines = ruled;
      loaded = true;
      hideHover();
      render();
    },
    destroy() {
      for (const [type, fn] of Object.entries(listeners)) overlay.removeEventListener(type, fn);
      resizer.disconnect();
      root.remove();
    },
  };
};
