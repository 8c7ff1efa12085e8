// The dashboard's shell: sign-in, the top bar, and routing between pages.
//
// Routes live in the URL's hash (#/devices/sim-0001), so fieldline serves one HTML
// page. Each page module exports render(main, ctx) and may return a function that
// stops what it started (streams, timers) when the user leaves the page.

import { api, session, signIn, signOut } from "./api.js";
import { attempt, clear, fill, errorBox, field, h } from "./dom.js";
import { zonePicker } from "./time.js";

const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };

const PAGES = [
  { path: /^\/?$/, module: "./pages/overview.js", nav: "Overview", href: "#/", role: "viewer" },
  { path: /^\/devices\/([^/]+)$/, module: "./pages/device.js", role: "viewer" },
  { path: /^\/alerts$/, module: "./pages/alerts.js", nav: "Alerts", href: "#/alerts", role: "viewer" },
  { path: /^\/rules$/, module: "./pages/rules.js", nav: "Rules", href: "#/rules", role: "viewer" },
  { path: /^\/rules\/(new|\d+)$/, module: "./pages/rule-edit.js", role: "viewer" },
  { path: /^\/rejected$/, module: "./pages/rejected.js", nav: "Rejected", href: "#/rejected", role: "operator" },
  { path: /^\/compare$/, module: "./pages/compare.js", nav: "Compare", href: "#/compare", role: "viewer" },
  { path: /^\/map$/, module: "./pages/map.js", nav: "Map", href: "#/map", role: "viewer" },
  { path: /^\/groups$/, module: "./pages/groups.js", nav: "Groups", href: "#/groups", role: "viewer" },
  { path: /^\/groups\/([^/]+)$/, module: "./pages/group.js", role: "viewer" },
  { path: /^\/metrics$/, module: "./pages/metrics.js", nav: "Metrics", href: "#/metrics", role: "viewer" },
  { path: /^\/firmware$/, module: "./pages/firmware.js", nav: "Firmware", href: "#/firmware", role: "viewer" },
  { path: /^\/rollouts$/, module: "./pages/rollouts.js", nav: "Rollouts", href: "#/rollouts", role: "viewer" },
  { path: /^\/rollouts\/new$/, module: "./pages/rollout-new.js", role: "operator" },
  { path: /^\/rollouts\/(\d+)$/, module: "./pages/rollout.js", role: "viewer" },
  {
    path: /^\/provisioning$/, module: "./pages/provisioning.js", nav: "Provisioning", href: "#/provisioning",
    role: "operator",
  },
  { path: /^\/channels$/, module: "./pages/channels.js", nav: "Channels", href: "#/channels", role: "admin" },
  { path: /^\/users$/, module: "./pages/users.js", nav: "Users", href: "#/users", role: "admin" },
  { path: /^\/audit$/, module: "./pages/audit.js", nav: "Audit log", href: "#/audit", role: "admin" },
  { path: /^\/health$/, module: "./pages/health.js", nav: "Health", href: "#/health", role: "admin" },
  { path: /^\/storage$/, module: "./pages/storage.js", nav: "Storage", href: "#/storage", role: "viewer" },
  { path: /^\/account$/, module: "./pages/account.js", role: "viewer" },
  { path: /^\/api-keys$/, module: "./pages/api-keys.js", nav: "API keys", href: "#/api-keys", role: "viewer" },
];

const root = document.getElementById("app");
let leavePage = null;
let visits = 0;
let liveDot = null;

function can(user, role) {
  return ROLE_RANK[user.role] >= ROLE_RANK[role];
}

function brand() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "brand-mark");
  svg.setAttribute("aria-hidden", "true");
  const box = document.createElementNS(ns, "rect");
  Object.entries({ width: 24, height: 24, rx: 6, fill: "var(--accent)" }).forEach(([k, v]) => box.setAttribute(k, v));
  const line = document.createElementNS(ns, "path");
  Object.entries({
    d: "M4 15l4-5 4 3 4-7 4 5", fill: "none", stroke: "#fff", "stroke-width": 2,
    "stroke-linecap": "round", "stroke-linejoin": "round",
  }).forEach(([k, v]) => line.setAttribute(k, v));
  svg.append(box, line);
  return h("a.brand", { href: "#/" }, svg, "fieldline");
}

function renderSignIn(message) {
  stopPage();
  document.title = "Sign in · fieldline";
  const error = errorBox();
  if (message) error.textContent = message;
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button.btn.primary", { type: "submit" }, "Sign in");
  const form = h(
    "form.stack-form",
    {
      id: "login-form",
      "aria-label": "Sign in",
      onsubmit: async (event) => {
        event.preventDefault();
        const user = await attempt(error, submit, () => signIn(username.value.trim(), password.value));
        if (user) {
          password.value = "";
          renderShell();
        } else {
          password.select();
        }
      },
    },
    field("Username", username),
    field("Password", password),
    error,
    submit,
  );
  fill(root, 
    h("div.login", {}, h("div.card", {}, brand(), h("h1.visually-hidden", {}, "Sign in to fieldline"), form)),
  );
  username.focus();
}

function renderShell() {
  const current = session.get();
  if (!current || !current.user) {
    renderSignIn();
    return;
  }
  const { user } = current;
  liveDot = h("span.live-dot", { title: "live updates", role: "img", "aria-label": "live updates idle" });
  const nav = h(
    "nav.nav",
    { "aria-label": "Main", id: "main-nav" },
    PAGES.filter((p) => p.nav && can(user, p.role)).map((p) => h("a", { href: p.href }, p.nav)),
    // On a phone the menu also holds what the top bar has no room for.
    h("div.nav-extra", {}, h("a", { href: "#/account" }, `Account (${user.username})`), zonePicker()),
  );
  // Phones: the pages behind a menu button.
  const menu = h("button.btn.small.menu-toggle", {
    type: "button",
    "aria-expanded": "false",
    "aria-controls": "main-nav",
    onclick: () => setMenu(menu.getAttribute("aria-expanded") !== "true"),
  }, "Menu");
  const account = h(
    "div.account",
    {},
    zonePicker(),
    liveDot,
    h("a.who", { href: "#/account", title: "Your account: password" }, user.username, " · ", h(`span.badge.plain.${user.role}`, {}, user.role)),
    h(
      "button.btn.small",
      {
        type: "button",
        onclick: () => {
          signOut();
          renderSignIn();
        },
      },
      "Sign out",
    ),
  );
  const main = h("main", { id: "main", tabindex: "-1" });
  const bar = h("header.topbar", {}, brand(), menu, nav, account);
  fill(root, bar, main);
  // The pages go behind the menu when they do not fit in the bar as it is now.
  const fit = () => {
    bar.classList.remove("compact");
    const compact = nav.scrollWidth > nav.clientWidth + 1 || window.innerWidth <= 720;
    bar.classList.toggle("compact", compact);
    if (!compact) setMenu(false);
  };
  new ResizeObserver(fit).observe(bar);
  route();
}

function setMenu(open) {
  const toggle = document.querySelector(".menu-toggle");
  if (!toggle) return;
  toggle.setAttribute("aria-expanded", String(open));
  toggle.closest(".topbar").classList.toggle("menu-open", open);
}

function setLive(state) {
  if (!liveDot) return;
  liveDot.className = `live-dot${state === true ? " on" : state === false ? " off" : ""}`;
  const label = state === true ? "live updates on" : state === false ? "reconnecting" : "live updates idle";
  liveDot.setAttribute("aria-label", label);
  liveDot.title = label;
}

function stopPage() {
  visits += 1; // a page still loading is now out of date
  if (leavePage) {
    try {
      leavePage();
    } catch {
      // a page's cleanup must never block navigation
    }
  }
  leavePage = null;
  setLive(null);
}

async function route() {
  const current = session.get();
  const main = document.getElementById("main");
  if (!current || !current.user || !main) return;
  stopPage();
  setMenu(false);
  // Each visit renders into its own element. A page still loading when the user moves on
  // fills a detached element, and is stopped as soon as it has started.
  const visit = visits;
  const view = h("div.page");
  fill(main, view);
  const path = decodeURIComponent(location.hash.replace(/^#/, "").split("?")[0]) || "/";
  const page = PAGES.find((p) => p.path.test(path));
  for (const link of document.querySelectorAll(".nav a")) {
    const active = page && link.getAttribute("href") === page.href;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!page) {
    view.append(h("div.empty", {}, h("strong", {}, "Page not found"), h("a", { href: "#/" }, "Back to the overview")));
    return;
  }
  if (!can(current.user, page.role)) {
    view.append(h("div.empty", {}, h("strong", {}, "Not available"), `This page needs the ${page.role} role.`));
    return;
  }
  const params = page.path.exec(path).slice(1);
  const ctx = {
    user: current.user,
    can: (role) => can(current.user, role),
    params,
    query: new URLSearchParams(location.hash.split("?")[1] || ""),
    setLive: (state) => {
      if (visit === visits) setLive(state);
    },
    setTitle: (title) => {
      if (visit === visits) document.title = `${title} · fieldline`;
    },
    navigate: (hash) => {
      location.hash = hash;
    },
  };
  try {
    const module = await import(page.module);
    const cleanup = visit === visits ? (await module.render(view, ctx)) || null : null;
    if (visit === visits) leavePage = cleanup;
    else if (cleanup) cleanup();
  } catch (error) {
    fill(view, h("div.alert", { role: "alert" }, `This page could not be shown: ${error.message}`));
  }
}

session.onSignedOut(() => renderSignIn("Your session ended; sign in again."));
window.addEventListener("hashchange", () => route());

async function start() {
  const current = session.get();
  if (current && current.access) {
    // The page's module loads while the session is checked: route() finds it loaded.
    const path = decodeURIComponent(location.hash.replace(/^#/, "").split("?")[0]) || "/";
    const page = PAGES.find((p) => p.path.test(path));
    if (page) import(page.module).catch(() => {}); // route() reports a failure itself
    try {
      const user = await api("GET", "/api/v1/auth/me");
      session.set({ ...session.get(), user });
    } catch {
      session.clear();
    }
  }
  renderShell();
}

start();
