// Small DOM helpers: an element builder, tables, status pills, times. No innerHTML with data.
import { t } from "./i18n.js";

/** h("tag.class#id", {attrs, on: {click}}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/i);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.classList.add(...String(v).split(/\s+/).filter(Boolean));
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

export function pill(text, kind = "muted") { return h(`span.pill.${kind}`, {}, text); }

export function onlinePill(online) {
  return online ? pill(t("online"), "ok") : pill(t("offline"), "bad");
}

const STATUS_KIND = { approved: "ok", pending: "warn", suspended: "bad", revoked: "muted" };
export function statusPill(status) { return pill(t(`wl.${status}`), STATUS_KIND[status] || "muted"); }

export function mono(text) { return h("span.mono", {}, text ?? "—"); }

/** "2026-11-27 08:00:05" in the browser's local time, or — */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (Number.isNaN(s)) return "";
  if (s < 60) return t("ago.s", { n: s });
  if (s < 3600) return t("ago.m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("ago.h", { n: Math.floor(s / 3600) });
  return t("ago.d", { n: Math.floor(s / 86400) });
}

export function timeCell(iso) {
  return h("span.when", { title: iso || "" }, h("span.mono", {}, fmtTime(iso)), iso ? h("span.dim", {}, ago(iso)) : null);
}

/** A compact rendering of a JSON-ish value (event details, audit before/after). */
export function brief(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value !== "object") return String(value);
  return Object.entries(value).map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`).join("  ");
}

/**
 * table(columns, rows, {rowAttrs}) with columns = [{label, cell(row) -> Node|string, cls}]
 */
export function table(columns, rows, { rowAttrs = () => ({}), caption } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.cls }, c.label)));
  const body = rows.length
    ? rows.map((r) => h("tr", rowAttrs(r), columns.map((c) => h("td", { class: c.cls }, c.cell(r)))))
    : [h("tr", {}, h("td.empty", { colSpan: columns.length }, t("empty")))];
  return h("div.table-wrap", {}, h("table.grid", {}, caption ? h("caption", {}, caption) : null,
    h("thead", {}, head), h("tbody", {}, body)));
}

/** The message for a failed call: 403 → 无权限, network → 无法连接, else the server's words. */
export function errorText(err) {
  if (err.status === 403) return t("forbidden");
  if (err.status === 401) return t("unauthorized");
  if (err.status === 0) return t("network");
  return `${t("error")}: ${err.message}${err.code ? ` (${err.code})` : ""}`;
}

export function errorBox(err) {
  if (err.status === 403) {
    return h("div.notice.forbidden", { role: "alert" }, h("strong", {}, t("forbidden")), h("span", {}, ` — ${t("forbidden.hint")}`));
  }
  return h("div.notice.bad", { role: "alert" }, errorText(err));
}

export function loading() { return h("div.notice.dim", {}, t("loading")); }

/**
 * A form's error display: a server's or our own error next to its field (aria-invalid, focus), or
 * in the form's own line when no field has that name; `alias` maps server field names to ours.
 */
export function fieldErrors(inputs, errors, formError, alias = {}) {
  return {
    show(name, message) {
      const key = alias[name] || name;
      if (errors[key]) {
        errors[key].textContent = message;
        inputs[key].setAttribute("aria-invalid", "true");
        inputs[key].focus();
      } else {
        formError.textContent = name ? `${name}: ${message}` : message;
      }
    },
    reset() {
      for (const n of Object.keys(errors)) { errors[n].textContent = ""; inputs[n].removeAttribute("aria-invalid"); }
      formError.textContent = "";
    },
  };
}

/** A modal asking for a reason; resolves to the reason string or null when cancelled. */
export function askReason(title, text) {
  const $ = (id) => document.getElementById(id);
  const dlg = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-reason").value = "";
  $("confirm-error").textContent = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok" ? $("confirm-reason").value.trim() : null),
      { once: true });
    dlg.returnValue = "";
    dlg.showModal();
    $("confirm-reason").focus();
  });
}

