// 运维 Ops: what the maintenance regulation asks ops to watch every day — contract alarms (a batch
// over its contracted count, channels outside contract dates, a missing policy) and the fault
// tickets by status, `recovered` included (the ledger saw the channel back; the vendor's feedback
// and the station's confirmation still apply), with confirm / dispute. Money follows these:
// a disputed fault is held out of the sheet until resolved, a confirmed one is billed.
import { api } from "./api.js";
import { askReason, clear, errorBox, errorText, h, loading, mono, pill, table, timeCell } from "./dom.js";
import { t } from "./i18n.js";

const STATUSES = ["", "open", "vendor_answered", "recovered", "repaired", "confirmed", "disputed"];
const KIND_OF = { open: "bad", vendor_answered: "warn", recovered: "ok", repaired: "ok", confirmed: "muted", disputed: "warn" };
const CAN_CONFIRM = new Set(["recovered", "repaired"]);
const CAN_DISPUTE = new Set(["recovered", "repaired", "vendor_answered"]);
const iso = (ts) => (ts === null || ts === undefined ? null : new Date(ts * 1000).toISOString());
const state = { status: "" };

export function mount(root) {
  let alive = true;
  const alarmsBox = h("div", {}, loading());
  const ticketsBox = h("div", {}, loading());
  const flash = h("div.flash", { role: "status" });
  const filter = h("select", { id: "ops-status", "aria-label": t("col.status") },
    STATUSES.map((s) => h("option", { value: s }, s ? t(`tk.${s}`) : t("tk.all"))));
  filter.value = state.status;
  filter.addEventListener("change", () => { state.status = filter.value; loadTickets(); });
  root.append(h("div.pane", {},
    h("section", { "aria-labelledby": "ops-alarms" },
      h("div.toolbar", {}, h("h2#ops-alarms", {}, t("ops.alarms")),
        h("button.ghost", { type: "button", on: { click: () => { loadAlarms(); loadTickets(); } } }, t("refresh")))),
    alarmsBox,
    h("section", { "aria-labelledby": "ops-tickets" },
      h("div.toolbar", {}, h("h2#ops-tickets", {}, t("ops.tickets")), filter)),
    flash, ticketsBox));

  async function loadAlarms() {
    try {
      const data = await api("/api/v1/contract/checks");
      if (!alive) return;
      const rows = data.alarms || [];
      clear(alarmsBox, rows.length ? table([
        { label: t("col.kind"), cell: (a) => pill(t(`ca.${a.kind}`), "bad") },
        { label: t("ops.subject"), cell: (a) => mono(a.subject) },
        { label: t("col.name"), cell: (a) => a.name || "—" },
        { label: t("col.detail"), cell: (a) => h("span.small", {}, a.detail) },
      ], rows, { rowAttrs: (a) => ({ dataset: { alarm: a.kind } }) }) : h("div.notice.ok", {}, t("ops.noalarms")));
    } catch (err) { if (alive) clear(alarmsBox, errorBox(err)); }
  }

  async function loadTickets() {
    const status = state.status;
    try {
      const data = await api(`/api/v1/tickets${status ? `?status=${status}` : ""}`);
      if (!alive || status !== state.status) return;
      const rows = data.tickets || [];
      clear(ticketsBox, h("div.dim.count", {}, t("count", { n: rows.length })), table([
        { label: t("tk.id"), cell: (k) => mono(k.id), cls: "id" },
        { label: t("tk.channel"), cell: (k) => mono(k.channel_id) },
        { label: `${t("tk.station")} / ${t("tk.vendor")}`, cell: (k) => `${k.station_id || "—"} / ${k.vendor_id}` },
        { label: t("tk.fault"), cell: (k) => `${k.fault}${k.cause ? ` (${k.cause})` : ""}` },
        { label: t("tk.since"), cell: (k) => timeCell(iso(k.since_ts)) },
        { label: t("col.status"), cell: (k) => pill(t(`tk.${k.status}`), KIND_OF[k.status] || "muted") },
        { label: t("tk.recovered_ts"), cell: (k) => timeCell(iso(k.recovered_ts)) },
        { label: t("tk.vendor_cause"), cell: (k) => h("span.small", {}, k.vendor_cause || k.dispute_reason || "—") },
        { label: t("col.actions"), cell: actions },
      ], rows, { rowAttrs: (k) => ({ dataset: { ticket: k.id, status: k.status } }) }));
    } catch (err) { if (alive) clear(ticketsBox, errorBox(err)); }
  }

  function actions(k) {
    // the ticket's state machine (gateway/reports/faults.py): only what it accepts is offered
    const btns = [];
    if (CAN_CONFIRM.has(k.status)) {
      btns.push(h("button.small.primary", { type: "button", on: { click: () => act(k, "confirm") } }, t("tk.confirm")));
    }
    if (CAN_DISPUTE.has(k.status)) {
      btns.push(h("button.small.ghost", { type: "button", on: { click: () => act(k, "dispute") } }, t("tk.dispute")));
    }
    return btns.length ? h("div.actions", {}, btns) : "—";
  }

  async function act(k, action) {
    const reason = await askReason(t("wl.ask", { action: t(`tk.${action}`), id: k.id }), t(`tk.${action}.hint`));
    if (reason === null) return;
    if (action === "dispute" && !reason) { say("bad", `${k.id}: ${t("tk.reason")}`); return; }
    try {
      const saved = await api(`/api/v1/tickets/${k.id}/${action}`,
        { method: "POST", body: action === "dispute" ? { reason } : {} });
      say("ok", t("wl.done", { id: saved.id || k.id, status: t(`tk.${saved.status || action}`) }));
    } catch (err) {
      say("bad", `${k.id}: ${errorText(err)}`);
    }
    loadTickets();
  }

  function say(kind, text) { clear(flash, h(`div.notice.${kind}`, {}, text)); }

  loadAlarms();
  loadTickets();
  const timer = setInterval(() => { loadAlarms(); loadTickets(); }, 60000);
  return () => { alive = false; clearInterval(timer); };
}
