// Bootstrap: token, language, header (health, who), and the fragment router (#view/arg).
import { api, clearToken, getToken, setToken, setUnauthorizedHandler, takeTokenFromUrl } from "./api.js";
import { applyStatic, getLang, setLang, t } from "./i18n.js";
import * as devices from "./devices.js";
import * as live from "./live.js";
import * as whitelist from "./whitelist.js";
import * as security from "./security.js";
import * as reports from "./reports.js";
import * as ops from "./ops.js";
import * as sources from "./sources.js";

const VIEWS = {
  devices: devices.mount,
  live: live.mount,
  whitelist: whitelist.mount,
  sources: sources.mount,
  alarms: security.mountAlarms,
  audit: security.mountAudit,
  reports: reports.mount,
  ops: ops.mount,
};

const $ = (id) => document.getElementById(id);
let unmount = null;

function route() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const view = VIEWS[name] ? name : "devices";
  for (const a of $("tabs").querySelectorAll("a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (unmount) { try { unmount(); } catch { /* a view's cleanup must not block the next */ } }
  const el = $("view");
  el.replaceChildren();
  el.dataset.view = view;
  unmount = VIEWS[view](el, { arg: decodeURIComponent(rest.join("/")) }) || null;
}

async function refreshHealth() {
  const badge = $("health");
  let body = null;
  let status = 0;
  try {
    const resp = await fetch("/healthz");
    status = resp.status;
    body = await resp.json();
  } catch { body = null; }
  badge.className = "pill";
  if (!body) {
    badge.classList.add("bad");
    badge.textContent = t("health.down");
    badge.title = "";
    return;
  }
  const ok = body.status === "ok" && status === 200;
  badge.classList.add(ok ? "ok" : "warn");
  badge.textContent = ok ? t("health.ok") : t("health.degraded");
  badge.title = [`gbgate ${body.version || ""}`,
    ...Object.entries(body.components || {}).map(([k, v]) => `${k}: ${v}`)].join("\n");
}

/** The role when the gateway offers /api/v1/whoami; otherwise the token's tail only. */
async function refreshWho() {
  const who = $("who");
  const token = getToken();
  who.textContent = token ? `…${token.slice(-4)}` : "";
  try {
    const me = await api("/api/v1/whoami");
    if (me && me.role) who.textContent = `${t("role")}: ${me.role}${me.name ? ` (${me.name})` : ""}`;
  } catch { /* no whoami endpoint: 403s on each view say what this role may not see */ }
}

function stopView() {
  if (unmount) { try { unmount(); } catch { /* ignore */ } }
  unmount = null;
  $("view").replaceChildren();
}

function showLogin(message = "") {
  document.body.dataset.auth = "out";
  $("who").textContent = "";
  $("login").hidden = false;
  $("view").hidden = true;
  $("login-error").textContent = message;
  $("login-token").focus();
}

async function enter() {
  document.body.dataset.auth = "in";
  $("login").hidden = true;
  $("view").hidden = false;
  refreshWho();
  route();
}

function start() {
  const lang = takeTokenFromUrl();
  if (lang) setLang(lang);
  document.documentElement.lang = getLang();
  applyStatic();
  $("lang").textContent = getLang() === "en" ? "中文" : "EN";
  $("lang").addEventListener("click", () => {
    setLang(getLang() === "en" ? "zh-CN" : "en");
    $("lang").textContent = getLang() === "en" ? "中文" : "EN";
    refreshHealth();
    refreshWho();
    if (getToken()) route();
  });
  $("logout").addEventListener("click", () => {
    clearToken();
    stopView();
    showLogin();
  });
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("login-token").value.trim();
    if (!token) return;
    setToken(token);
    try {
      await api("/api/v1/devices?online=true");
    } catch (err) {
      if (err.status === 401) { clearToken(); showLogin(t("login.bad")); return; }
      // 403 (e.g. a vendor token) still means the token is valid.
    }
    $("login-token").value = "";
    enter();
  });
  setUnauthorizedHandler(() => { clearToken(); stopView(); showLogin(t("unauthorized")); });
  window.addEventListener("hashchange", () => { if (getToken()) route(); });
  refreshHealth();
  setInterval(refreshHealth, 15000);
  if (getToken()) enter(); else showLogin();
}

start();
