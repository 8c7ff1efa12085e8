// Times as the dashboard shows them: one format (2026-12-07 14:03:09, 24 h) in one zone
// the user chose: the browser's (default), UTC, or the zone of the group a page is about.
// Everything that shows a time (dom.js fmtTime, the chart's axis and tooltip) asks here,
// so a change of choice changes them all.

const STORAGE_KEY = "fieldline.timezone";
const CHOICES = ["browser", "UTC", "group"];
const CHANGED = "fieldline:timezone"; // dispatched on window when what applies may differ

// Constructing an Intl.DateTimeFormat costs far more than using one; one per zone.
const wallFormats = new Map();
const nameFormats = new Map();

function wallFormat(zone) {
  let format = wallFormats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", weekday: "short",
      year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
    });
    wallFormats.set(zone, format);
  }
  return format;
}

const WEEKDAYS = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/** Whether `zone` is an IANA zone this browser knows ("Europe/Berlin", "UTC"). */
export function isZone(zone) {
  if (typeof zone !== "string" || !zone) return false;
  try {
    wallFormat(zone);
    return true;
  } catch {
    return false;
  }
}

/** "browser", "UTC" or "group", as stored for this browser. */
export function zoneChoice() {
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch {
    // storage refused (privacy mode): the default applies
  }
  return CHOICES.includes(stored) ? stored : "browser";
}

export function setZoneChoice(choice) {
  if (!CHOICES.includes(choice)) throw new Error(`unknown time zone choice: ${choice}`);
  try {
    localStorage.setItem(STORAGE_KEY, choice);
  } catch {
    // not kept across reloads, still applied below
  }
  window.dispatchEvent(new Event(CHANGED));
}

// The group zone a page declared, and the page (hash path) that declared it: another page
// that declares nothing must not inherit it.
let pageZone = null;
const currentPath = () => location.hash.replace(/^#/, "").split("?")[0];

/**
 * Which group's zone applies to the page being shown: an IANA name, or null (the page is
 * about no group, or its group has no zone). Call it before the page formats its times.
 */
export function setPageZone(zone) {
  pageZone = isZone(zone) ? { zone, path: currentPath() } : null;
  window.dispatchEvent(new Event(CHANGED));
}

/** The group zone of the page shown, if it declared one. */
export function groupZone() {
  return pageZone && pageZone.path === currentPath() ? pageZone.zone : null;
}

/** The IANA zone times are shown in now. */
export function activeZone() {
  const choice = zoneChoice();
  if (choice === "UTC") return "UTC";
  if (choice === "group") return groupZone() || browserZone();
  return browserZone();
}

/** The wall clock of instant `t` (ms or a Date) in `zone`: { year, month 1–12, day, hour, minute, second, weekday 1=Mon }. */
export function wallClock(t, zone = activeZone()) {
  const parts = {};
  for (const { type, value } of wallFormat(zone).formatToParts(new Date(t))) parts[type] = value;
  return {
    year: Number(parts.year), month: Number(parts.month), day: Number(parts.day),
    hour: Number(parts.hour) % 24, minute: Number(parts.minute), second: Number(parts.second),
    weekday: WEEKDAYS[parts.weekday],
  };
}

const asUtc = (w) => Date.UTC(w.year, w.month - 1, w.day, w.hour || 0, w.minute || 0, w.second || 0);

/** How far `zone`'s wall clock is ahead of UTC at instant `t`, in ms. */
function offsetAt(t, zone) {
  const whole = Math.floor(t / 1000) * 1000;
  return asUtc(wallClock(whole, zone)) - whole;
}

/**
 * The instant at which `zone`'s wall clock shows `wall` (fields may overflow: day 32 is the
 * next month's first). A wall time skipped by a DST change maps to the instant just after.
 */
export function fromWallClock(wall, zone = activeZone()) {
  const guess = asUtc(wall);
  const first = guess - offsetAt(guess, zone);
  return guess - offsetAt(first, zone);
}

const pad2 = (n) => String(n).padStart(2, "0");

export const fmtDate = (w) => `${w.year}-${pad2(w.month)}-${pad2(w.day)}`;
export const fmtClock = (w, seconds = true) =>
  seconds ? `${pad2(w.hour)}:${pad2(w.minute)}:${pad2(w.second)}` : `${pad2(w.hour)}:${pad2(w.minute)}`;

/** "2026-12-07 14:03:09" in the zone shown. */
export function fmtDateTime(t, zone = activeZone()) {
  const w = wallClock(t, zone);
  return `${fmtDate(w)} ${fmtClock(w)}`;
}

/** The zone's short name at instant `t`: "UTC", "CET", "GMT+1", "GMT+5:30". */
export function zoneAbbreviation(t = Date.now(), zone = activeZone()) {
  let format = nameFormats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" });
    nameFormats.set(zone, format);
  }
  const part = format.formatToParts(new Date(t)).find((p) => p.type === "timeZoneName");
  return part ? part.value : zone;
}

/** "2026-12-07 14:03:09 UTC": a time that says its zone, for tooltips. */
export function fmtDateTimeZoned(t, zone = activeZone()) {
  return `${fmtDateTime(t, zone)} ${zoneAbbreviation(t, zone)}`;
}

/** What the zone shown is called: "UTC", or "Europe/Berlin (CET)". */
export function zoneDescription(zone = activeZone()) {
  const short = zoneAbbreviation(Date.now(), zone);
  return zone === "UTC" || short === zone ? zone : `${zone} (${short})`;
}

/** A small "Times in Europe/Berlin (CET)" note for a page or a table's header. */
export function zoneNote() {
  const note = document.createElement("span");
  note.className = "muted zone-note";
  note.textContent = `Times in ${zoneDescription()}`;
  return note;
}

/**
 * The choice of zone as a <select>; a change is kept for this browser and the current page
 * is shown again in the new zone. Its labels name the zones that apply on the page shown.
 */
export function zonePicker() {
  const select = document.createElement("select");
  select.className = "zone-picker";
  select.name = "timezone";
  select.setAttribute("aria-label", "Time zone");
  const options = Object.fromEntries(CHOICES.map((choice) => {
    const option = document.createElement("option");
    option.value = choice;
    select.append(option);
    return [choice, option];
  }));

  const label = () => {
    options.browser.textContent = `Browser (${browserZone()})`;
    options.UTC.textContent = "UTC";
    const group = groupZone();
    options.group.textContent = group ? `Group's zone (${group})` : "Group's zone";
    options.group.title = group ? "" : "On pages about a group or its devices; elsewhere the browser's zone";
    select.value = zoneChoice();
    select.title = `Times in ${zoneDescription()}`;
  };
  const relabel = () => {
    if (!select.isConnected && select.dataset.placed) {
      window.removeEventListener(CHANGED, relabel);
      window.removeEventListener("hashchange", relabel);
      return;
    }
    if (select.isConnected) select.dataset.placed = "true";
    label();
  };
  select.addEventListener("change", () => {
    setZoneChoice(select.value);
    // The router shows the current page again, now in the chosen zone.
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  window.addEventListener(CHANGED, relabel);
  window.addEventListener("hashchange", relabel);
  label();
  return select;
}
