// 白名单 Whitelist (security role): entries by status with the evidence of pending ones, the
// approve / suspend / revoke actions with a reason, and the add form with errors next to the field.
import { api } from "./api.js";
import { askReason, clear, errorBox, errorText, fieldErrors, h, mono, pill, statusPill, table, timeCell } from "./dom.js";
import { t } from "./i18n.js";

const STATUSES = ["pending", "approved", "suspended", "revoked"];
const ACTIONS = { approve: "approved", suspend: "suspended", revoke: "revoked" };
const FIELDS = ["device_id", "password", "ip", "name", "site", "link", "max_channels", "channel_ranges"];
const FIELD_ALIAS = { allowed_sources: "ip", username: "password" };
const state = { status: "pending" };

export function mount(root) {
  let alive = true;
  const tabs = h("div.subtabs", { role: "tablist" });
  const listBox = h("div");
  const flash = h("div.flash", { role: "status" });
  const form = buildForm();
  root.append(h("div.split.wide-left", {}, h("div.pane", {}, tabs, flash, listBox), h("aside.side", {}, form.el)));

  function renderTabs() {
    clear(tabs, STATUSES.map((s) => h("button.subtab", {
      type: "button", role: "tab", "aria-selected": s === state.status ? "true" : "false",
      on: { click: () => { state.status = s; renderTabs(); load(); } },
    }, t(`wl.${s}`))));
  }

  async function load() {
    clear(listBox, h("div.notice.dim", {}, t("loading")));
    const status = state.status;
    let data;
    try {
      data = await api(`/api/v1/whitelist?status=${status}`);
    } catch (err) {
      if (alive) clear(listBox, errorBox(err));
      form.el.hidden = err.status === 403;  // a role that may not read the list may not add either
      return;
    }
    if (!alive || status !== state.status) return;
    form.el.hidden = false;
    const entries = data.entries || [];
    clear(listBox, h("div.dim.count", {}, t("count", { n: entries.length })), table(columns(status), entries,
      { rowAttrs: (e) => ({ dataset: { id: e.device_id } }) }));
  }

  function actions(e) {
    const btns = Object.entries(ACTIONS).filter(([, st]) => st !== e.status).map(([action]) =>
      h(`button.small.${action === "approve" ? "primary" : "ghost"}`, { type: "button", on: { click: () => act(e, action) } },
        t(`wl.${action}`)));
    if (e.status === "pending") {
      btns.unshift(h("button.small.ghost", { type: "button", on: { click: () => form.prefill(e) } }, t("wl.complete")));
    }
    return h("div.actions", {}, btns);
  }

  async function act(e, action) {
    const reason = await askReason(t("wl.ask", { action: t(`wl.${action}`), id: e.device_id }),
      action === "approve" && !e.has_credential ? t("wl.nocred") : `${e.name || ""} ${e.site || ""}`.trim());
    if (reason === null) return;
    try {
      const saved = await api(`/api/v1/whitelist/${e.device_id}/${action}`, { method: "POST", body: { reason } });
      say("ok", t("wl.done", { id: saved.device_id, status: t(`wl.${saved.status}`) }));
    } catch (err) {
      say("bad", `${e.device_id}: ${errorText(err)}`);
    }
    load();
  }

  function say(kind, text) { clear(flash, h(`div.notice.${kind}`, {}, text)); }

  function columns(status) {
    const id = { label: t("col.id"), cell: (e) => mono(e.device_id), cls: "id" };
    const act = { label: t("col.actions"), cell: actions };
    if (status === "pending") {
      const ev = (e) => e.evidence || {};
      return [id,
        { label: t("col.source"), cell: (e) => mono(ev(e).source || "—") },
        { label: t("col.transport"), cell: (e) => (ev(e).transport || "—").toUpperCase() },
        { label: t("col.ua"), cell: (e) => h("span.small", {}, ev(e).user_agent || "—") },
        { label: t("col.first"), cell: (e) => timeCell(ev(e).first_seen) },
        { label: t("col.last"), cell: (e) => timeCell(ev(e).last_seen) },
        { label: t("col.attempts"), cell: (e) => String(ev(e).attempts ?? "—"), cls: "num" },
        act];
    }
    return [id,
      { label: t("col.name"), cell: (e) => e.name || "—" },
      { label: t("col.status"), cell: (e) => statusPill(e.status) },
      { label: `${t("col.site")} / ${t("col.link")}`, cell: (e) => `${e.site || "—"} / ${e.link || "—"}` },
      { label: t("col.sources"), cell: (e) => mono((e.allowed_sources || []).join(", ") || "*") },
      { label: t("col.max"), cell: (e) => String(e.max_channels ?? "—"), cls: "num" },
      { label: t("col.ranges"), cell: (e) => mono(e.channel_ranges || "*") },
      { label: t("col.cred"), cell: (e) => (e.has_credential ? pill(t("yes"), "ok") : pill(t("no"), "warn")) },
      { label: t("col.updated"), cell: (e) => timeCell(e.updated_at) },
      act];
  }

  function buildForm() {
    const inputs = {};
    const errors = {};
    const formError = h("p.field-error", { role: "alert" });
    const field = (name, attrs = {}) => {
      const id = `wl-${name}`;
      const input = name === "ip"
        ? h("textarea.mono", { id, name, rows: "2", "aria-describedby": `${id}-err`, ...attrs })
        : h("input", { id, name, "aria-describedby": `${id}-err`, ...attrs });
      inputs[name] = input;
      errors[name] = h("p.field-error", { id: `${id}-err` });
      input.addEventListener("input", () => { input.removeAttribute("aria-invalid"); errors[name].textContent = ""; });
      return h("div.field", {}, h("label", { for: id }, t(`f.${name}`)), input, errors[name]);
    };
    const statusSel = h("select", { id: "wl-status", name: "status" },
      h("option", { value: "approved" }, t("wl.approved")), h("option", { value: "pending" }, t("wl.pending")));
    const submit = h("button.primary", { type: "submit" }, t("wl.save"));
    const el = h("form.card.form", { novalidate: true, "aria-label": t("wl.add") },
      h("h2", {}, t("wl.add")),
      field("device_id", { class: "mono", inputmode: "numeric", maxlength: "20", autocomplete: "off", required: true }),
      field("password", { type: "password", autocomplete: "new-password" }),
      field("ip", { placeholder: "10.1.2.3, 10.1.3.0/24" }),
      field("name"),
      h("div.two", {}, field("site"), field("link")),
      h("div.two", {}, field("max_channels", { class: "mono", inputmode: "numeric" }),
        h("div.field", {}, h("label", { for: "wl-status" }, t("f.status")), statusSel)),
      field("channel_ranges", { class: "mono", placeholder: "34020000001310000001-34020000001310000244", autocomplete: "off" }),
      formError, submit);

    const { show: showError, reset } = fieldErrors(inputs, errors, formError, FIELD_ALIAS);

    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      reset();
      const v = (n) => inputs[n].value.trim();
      const body = { device_id: v("device_id"), status: statusSel.value };
      if (!/^\d{20}$/.test(body.device_id)) { showError("device_id", t("live.badid")); return; }
      if (v("password")) body.password = inputs.password.value;
      const ips = v("ip").split(/[\s,;]+/).filter(Boolean);
      if (ips.length) body.ip = ips;
      for (const n of ["name", "site", "link"]) if (v(n)) body[n] = v(n);
      if (v("max_channels")) {
        if (!/^\d+$/.test(v("max_channels"))) { showError("max_channels", t("f.int")); return; }
        body.max_channels = Number(v("max_channels"));
      }
      // a lower platform's allowed channel IDs: lo-hi or one ID, several separated by , ; or spaces
      if (v("channel_ranges")) {
        const items = v("channel_ranges").split(/[\s,;]+/).filter(Boolean);
        const ok = items.every((it) => { const [lo, hi = lo, rest] = it.split("-"); return rest === undefined && /^\d{20}$/.test(lo) && /^\d{20}$/.test(hi) && lo <= hi; });
        if (!ok) { showError("channel_ranges", t("f.ranges")); return; }
        body.channel_ranges = items.join(",");
      }
      submit.disabled = true;
      try {
        const saved = await api("/api/v1/whitelist", { method: "POST", body });
        say("ok", t("wl.saved", { id: saved.device_id }));
        for (const n of FIELDS) inputs[n].value = "";
        state.status = saved.status;
        renderTabs();
        load();
      } catch (err) {
        if (err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 403) {
          showError(err.field, err.message);
        } else {
          formError.textContent = errorText(err);
        }
      } finally { submit.disabled = false; }
    });

    function prefill(e) {
      inputs.device_id.value = e.device_id;
      const src = (e.evidence && e.evidence.source) || "";
      const v6 = src.match(/^\[(.+)\](?::\d+)?$/);
      inputs.ip.value = v6 ? v6[1] : src.replace(/^([\d.]+):\d+$/, "$1");
      inputs.name.value = e.name || "";
      statusSel.value = "approved";
      inputs.password.focus();
    }

    return { el, prefill };
  }

  renderTabs();
  load();
  return () => { alive = false; };
}
