// Building the page: elements from data (text is always text, never markup),
// formatting, and the few shared widgets (toasts, confirmation, empty states).

import { fmtDateTime } from "./time.js";

/**
 * h("a.btn.primary", {href: "#/", onclick: fn, "aria-label": "x"}, "text", child, ...)
 * Children may be nodes, strings (set as text) or null/false (skipped); arrays are flattened.
 */
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = [el.className, value].filter(Boolean).join(" ");
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** Replace el's children; like h(), children may be arrays, strings or null. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Formatting

export function fmtNumber(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(2);
  const decimals = abs >= 100 ? 1 : digits;
  return Number(value.toFixed(decimals)).toLocaleString(undefined, { maximumFractionDigits: decimals });
}

const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

/** 12_345_678 → "12.3 MB": powers of 1000, as disks are sold. */
export function fmtBytes(count) {
  let value = count;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : Math.round(value)} ${BYTE_UNITS[unit]}`;
}

export function fmtRate(perSecond) {
  if (perSecond >= 1000) return `${(perSecond / 1000).toFixed(1)}k`;
  return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

/** "2026-12-07 14:03:09" in the zone the user chose (time.js). */
export function fmtTime(iso) {
  if (!iso) return "—";
  return fmtDateTime(new Date(iso));
}

export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** 95 → "1 min 35 s": the two largest units, as the health checks word a duration. */
export function fmtDuration(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  const [days, hours, minutes, secs] = [
    Math.floor(whole / 86400), Math.floor(whole / 3600) % 24, Math.floor(whole / 60) % 60, whole % 60,
  ];
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${secs} s`;
  return `${secs} s`;
}

/**
 * A <time> showing "3 min ago" with the exact time as tooltip; `now` (ms) is the clock it
 * is measured against, when the server's is known.
 */
export function ago(iso, now = Date.now()) {
  if (!iso) return h("span.muted", {}, "never");
  return h("time", { datetime: iso, title: fmtTime(iso) }, fmtAgo(iso, now));
}

const STATUS_LABELS = { online: "online", offline: "offline", never_seen: "never seen", disabled: "disabled" };

export function statusBadge(status) {
  return h(`span.badge.${status}`, {}, STATUS_LABELS[status] || status.replaceAll("_", " "));
}

// Shared widgets

export function empty(title, ...hint) {
  return h("div.empty", {}, h("strong", {}, title), hint.length ? h("div", {}, ...hint) : null);
}

/** An inline error region: set `.textContent` to show an error where it happened. */
export function errorBox() {
  return h("div.alert", { role: "alert", "aria-live": "polite" });
}

function toastRegion() {
  let region = document.querySelector(".toasts");
  if (!region) {
    region = h("div.toasts", { role: "status", "aria-live": "polite" });
    document.body.append(region);
  }
  return region;
}

export function toast(message, kind = "info") {
  const note = h(`div.toast.${kind}`, {}, message);
  toastRegion().append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmAction(title, message, confirmLabel = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, message),
      h(
        "div.actions",
        {},
        h("button.btn", { type: "button", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
        h("button.btn.danger.solid", { type: "button", onclick: () => dialog.close("ok") }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Show a secret once, with a copy button; resolves when dismissed. */
export function showSecret(title, explanation, secret) {
  return new Promise((resolve) => {
    const copy = async () => {
      try {
        await navigator.clipboard.writeText(secret);
        toast("Copied");
      } catch {
        toast("Copy failed: select the text and copy it", "error");
      }
    };
    const dialog = h(
      "dialog",
      { "aria-labelledby": "secret-title" },
      h("h2", { id: "secret-title" }, title),
      h("p", {}, explanation),
      h("div.secret", {}, h("code.secret-value", {}, secret)),
      h(
        "div.actions",
        {},
        h("button.btn", { type: "button", onclick: copy }, "Copy"),
        h("button.btn.primary", { type: "button", onclick: () => dialog.close() }, "Done"),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A labelled form control. */
export function field(label, control, hint) {
  return h("label.field", {}, label, control, hint ? h("span.muted", {}, hint) : null);
}

/** Run an async form action, showing its error in `box` and disabling `button` meanwhile. */
export async function attempt(box, button, action) {
  box.textContent = "";
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    box.textContent = error.message;
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
