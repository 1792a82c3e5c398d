// 告警 Alarms (cloned cameras, binding mismatches, lockouts) and 审计 Audit (the hash-chained log:
// whether the chain verifies and, if not, the first bad record).
import { api } from "./api.js";
import { brief, clear, errorBox, fmtTime, h, loading, mono, pill, table } from "./dom.js";
import { t } from "./i18n.js";

export function mountAlarms(root) {
  let alive = true;
  const box = h("div", {}, loading());
  root.append(h("div.pane", {}, h("div.toolbar", {}, h("button.ghost", { type: "button", on: { click: load } }, t("refresh"))), box));
  async function load() {
    try {
      const data = await api("/api/v1/alarms?limit=500");
      if (!alive) return;
      const rows = data.alarms || [];
      clear(box, h("div.dim.count", {}, t("count", { n: rows.length })), table([
        { label: t("col.time"), cell: (a) => mono(fmtTime(a.ts)) },
        { label: t("col.id"), cell: (a) => mono(a.device_id), cls: "id" },
        { label: t("col.kind"), cell: (a) => pill(a.kind, "bad") },
        { label: t("col.detail"), cell: (a) => h("span.small", {}, brief(a.detail)) },
      ], rows));
    } catch (err) { if (alive) clear(box, errorBox(err)); }
  }
  load();
  const timer = setInterval(load, 15000);
  return () => { alive = false; clearInterval(timer); };
}

export function mountAudit(root) {
  let alive = true;
  let records = [];
  const banner = h("div");
  const box = h("div", {}, loading());
  const more = h("button.ghost", { type: "button", hidden: true, on: { click: () => load(records.length ? records[records.length - 1].seq : 0) } }, t("au.more"));
  root.append(h("div.pane", {}, h("div.toolbar", {},
    h("button.ghost", { type: "button", on: { click: () => { records = []; load(0); } } }, t("refresh"))), banner, box, more));

  async function load(after) {
    let data;
    try {
      data = await api(`/api/v1/audit?after=${after}&limit=200`);
    } catch (err) {
      if (alive) { clear(box, errorBox(err)); clear(banner); }
      return;
    }
    if (!alive) return;
    records = records.concat(data.records || []);
    more.hidden = (data.records || []).length < 200;
    clear(banner, data.ok
      ? h("div.notice.ok", { role: "status" }, `✓ ${t("au.ok")}`)
      : h("div.notice.bad", { role: "alert" }, `✗ ${t("au.bad", { seq: data.first_bad_seq ?? "?" })}`));
    const bad = data.first_bad_seq;
    clear(box, table([
      { label: t("col.seq"), cell: (r) => mono(String(r.seq)), cls: "num" },
      { label: t("col.time"), cell: (r) => mono(fmtTime(r.ts)) },
      { label: t("col.actor"), cell: (r) => mono(r.actor) },
      { label: t("col.action"), cell: (r) => pill(r.action, "muted") },
      { label: t("col.target"), cell: (r) => mono(r.target) },
      { label: t("reason"), cell: (r) => r.reason || "—" },
      { label: t("col.change"), cell: (r) => change(r) },
    ], records, { rowAttrs: (r) => ({ class: bad != null && r.seq >= bad ? "badrow" : undefined }) }));
  }

  load(0);
  return () => { alive = false; };
}

const SKIP = ["updated_at", "created_at", "version", "device_id", "credential_username"];
const FIRST = ["status", "has_credential", "allowed_sources", "name", "site", "link", "max_channels", "channel_ranges",
  "expected_manufacturer", "expected_model", "not_before", "not_after"];

/** before → after, only the keys that changed (status, sources, ...), full JSON on demand. */
function change(r) {
  const before = r.before || {};
  const after = r.after || {};
  const empty = (v) => v === undefined || v === null || v === "" || (typeof v === "object" && !Object.keys(v).length);
  const same = (a, b) => (empty(a) && empty(b)) || JSON.stringify(a) === JSON.stringify(b);
  const rank = (k) => { const i = FIRST.indexOf(k); return i < 0 ? (k === "evidence" ? 99 : 50) : i; };
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((k) => !SKIP.includes(k) && !same(before[k], after[k]))
    .sort((a, b) => rank(a) - rank(b));
  if (!keys.length) return "—";
  const show = (v) => (empty(v) ? "∅" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const line = (k) => `${k}: ${show(before[k])} → ${show(after[k])}`;
  return h("details.change", {}, h("summary", {}, keys.slice(0, 3).map(line).join("; ") + (keys.length > 3 ? " …" : "")),
    h("pre.mono", {}, keys.map(line).join("\n")));
}
