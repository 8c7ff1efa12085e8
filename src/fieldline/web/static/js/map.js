// Maps: devices at their latest positions, and a device's track, on Leaflet (vendored:
// vendor/leaflet). Under the tiles lies a grid of coordinates drawn here, so positions
// and tracks still show where the tile server cannot be reached (no internet) or is
// switched off (FIELDLINE_MAP_TILES_URL empty): a tile that fails to load is hidden.

import { api } from "./api.js";
import * as L from "../vendor/leaflet/leaflet-src.esm.js";

let settings = null; // GET /api/v1/map, asked once per page load

/** The tile server to use (its styles are in index.html), asked for once. */
function askSettings() {
  if (!settings) {
    settings = api("GET", "/api/v1/map").catch((error) => {
      settings = null; // asked again by the next map
      throw error;
    });
  }
  return settings;
}

// More markers than this are drawn on one canvas: a thousand SVG paths (each a DOM node
// with its own events) cost the page about half a second.
const SVG_MARKERS = 300;

// Degrees between grid lines: about four lines across a 256 px tile at every zoom.
const STEPS = [90, 45, 30, 15, 10, 5, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001];

function gridStep(zoom) {
  const tileDegrees = 360 / 2 ** zoom;
  return STEPS.find((step) => tileDegrees / step >= 2) || STEPS.at(-1);
}

const fmtDegrees = (value, step, [positive, negative]) => {
  const decimals = Math.max(0, Math.ceil(-Math.log10(step)));
  const hemisphere = value > 0 ? positive : value < 0 ? negative : "";
  return `${Math.abs(value).toFixed(decimals)}°${hemisphere}`;
};

const STATUS_COLOURS = { online: "#15803d", offline: "#b91c1c", never_seen: "#64748b", disabled: "#94a3b8" };

/** Latitude and longitude lines with their values, one canvas per tile. */
const CoordinateGrid = L.GridLayer.extend({
  createTile(coords) {
    const tile = document.createElement("canvas");
    const size = this.getTileSize();
    const ratio = window.devicePixelRatio || 1;
    tile.width = size.x * ratio;
    tile.height = size.y * ratio;
    const ctx = tile.getContext("2d");
    ctx.scale(ratio, ratio);
    const map = this._map;
    const nw = coords.scaleBy(size);
    const corner = (dx, dy) => map.unproject([nw.x + dx, nw.y + dy], coords.z);
    const top = corner(0, 0);
    const bottom = corner(size.x, size.y);
    const step = gridStep(coords.z);
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    ctx.strokeStyle = dark ? "rgba(148, 163, 184, 0.25)" : "rgba(100, 116, 139, 0.25)";
    ctx.fillStyle = dark ? "rgba(226, 232, 240, 0.7)" : "rgba(51, 65, 85, 0.7)";
    ctx.font = "10px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let lon = Math.ceil(top.lng / step) * step; lon <= bottom.lng; lon += step) {
      const x = Math.round(map.project([top.lat, lon], coords.z).x - nw.x) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, size.y);
      ctx.stroke();
      const text = fmtDegrees(lon, step, ["E", "W"]);
      // A label the tile's edge would cut is left to the next line.
      if (x + 3 + ctx.measureText(text).width < size.x) ctx.fillText(text, x + 3, size.y - 4);
    }
    for (let lat = Math.ceil(bottom.lat / step) * step; lat <= top.lat; lat += step) {
      const y = Math.round(map.project([lat, top.lng], coords.z).y - nw.y) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(size.x, y);
      ctx.stroke();
      // Once per tile row would do; every tile's left edge keeps it in view when panning.
      if (y > 12) ctx.fillText(fmtDegrees(lat, step, ["N", "S"]), 3, y - 3);
    }
    return tile;
  },
});

/**
 * A map in `container` (which must have a height). Answers { setDevices(positions),
 * setTrack(points), destroy() }; `onOpen(deviceId)` is called when a device is chosen;
 * `settings`, the promise of GET /api/v1/map when the page asked for it already.
 */
export async function createMap(container, { label = "Map", onOpen = null, settings: asked = null } = {}) {
  if (asked) settings = asked; // a page that asked for them with its data
  const { tiles_url: tilesUrl, attribution } = await askSettings();
  container.classList.add("map");
  container.setAttribute("role", "region");
  container.setAttribute("aria-label", label);
  const map = L.map(container, { worldCopyJump: true, zoomSnap: 0.5, attributionControl: true });
  map.attributionControl.setPrefix(false);
  new CoordinateGrid({ className: "map-grid" }).addTo(map);
  if (tilesUrl) {
    const tiles = L.tileLayer(tilesUrl, {
      attribution,
      maxZoom: 19,
      // The dashboard sends no referrer (referrer-policy); tile servers ask for one.
      referrerPolicy: "strict-origin-when-cross-origin",
      crossOrigin: false,
    });
    tiles.on("tileerror", ({ tile }) => {
      tile.style.visibility = "hidden";
      container.dataset.offline = "";
    });
    tiles.on("tileload", () => delete container.dataset.offline);
    tiles.addTo(map);
  } else {
    map.attributionControl.addAttribution("Coordinates grid");
  }
  map.setView([20, 0], 1.5);
  const devices = L.layerGroup().addTo(map);
  const canvas = L.canvas({ padding: 0.2 });
  const track = L.layerGroup().addTo(map);
  // A container that gets its size after the map (a card laid out later) needs telling.
  const resizer = new ResizeObserver(() => map.invalidateSize());
  resizer.observe(container);

  function fit(bounds, maxZoom) {
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [24, 24], maxZoom });
  }

  return {
    map,
    /** positions: GET /api/v1/positions items; the view fits them. */
    setDevices(positions, { fitView = true } = {}) {
      devices.clearLayers();
      container.dataset.devices = String(positions.length);
      const many = positions.length > SVG_MARKERS;
      container.dataset.renderer = many ? "canvas" : "svg";
      for (const p of positions) {
        // A canvas has no CSS classes: the status colour is given here.
        const marker = L.circleMarker([p.latitude, p.longitude], many
          ? { renderer: canvas, radius: 5, weight: 1, color: "#fff", fillColor: STATUS_COLOURS[p.status], fillOpacity: 0.9 }
          : { radius: 6, weight: 2, fillOpacity: 0.85, className: `map-device ${p.status}` });
        marker.bindTooltip(`${p.name || p.device_id} · ${p.status.replace("_", " ")}`);
        if (onOpen) marker.on("click", () => onOpen(p.device_id));
        marker.addTo(devices);
        marker.getElement()?.setAttribute("data-device-id", p.device_id);
      }
      if (fitView) fit(L.latLngBounds(positions.map((p) => [p.latitude, p.longitude])), 14);
    },
    /** points: [{ t, lat, lon }] in time order; drawn as a line with start and end. */
    setTrack(points) {
      track.clearLayers();
      const path = points.filter((p) => Number.isFinite(p.lat) && Number.isFinite(p.lon)).map((p) => [p.lat, p.lon]);
      container.dataset.track = String(path.length);
      if (!path.length) return;
      L.polyline(path, { className: "map-track", weight: 3 }).addTo(track);
      L.circleMarker(path[0], { radius: 5, className: "map-track-start" }).bindTooltip("start").addTo(track);
      L.circleMarker(path.at(-1), { radius: 7, className: "map-track-end" }).bindTooltip("latest").addTo(track);
      fit(L.latLngBounds(path), 16);
    },
    destroy() {
      resizer.disconnect();
      map.remove();
    },
  };
}
