// 设备 Devices: the inventory with live presence, a filter, a search box and one device's details.
import { api } from "./api.js";
import { brief, clear, errorBox, errorText, fmtTime, h, loading, mono, onlinePill, pill, table, timeCell } from "./dom.js";
import { t } from "./i18n.js";

const state = { online: "", q: "", selected: "" };
const MAX_ROWS = 500;

export function mount(root, { arg }) {
  if (arg) state.selected = arg;
  const listBox = h("div.list");
  const detailBox = h("aside.detail", { "aria-label": t("col.detail") });
  const count = h("span.dim");
  const search = h("input.search", {
    type: "search", placeholder: t("search"), "aria-label": t("search"), value: state.q,
    on: { input: (e) => { state.q = e.target.value; render(); } },
  });
  const filter = h("select", { "aria-label": t("col.status"), on: { change: (e) => { state.online = e.target.value; load(); } } },
    h("option", { value: "" }, t("all")), h("option", { value: "true" }, t("online")), h("option", { value: "false" }, t("offline")));
  filter.value = state.online;
  const toolbar = h("div.toolbar", {}, search, filter,
    h("button.ghost", { type: "button", on: { click: () => { load(); loadDetail(); } } }, t("refresh")), count);
  root.append(h("div.split", {}, h("div.pane", {}, toolbar, listBox), detailBox));

  let devices = null;
  let error = null;
  let alive = true;

  async function load() {
    if (devices === null) clear(listBox, loading());
    try {
      const q = state.online ? `?online=${state.online}` : "";
      const data = await api(`/api/v1/devices${q}`);
      devices = data.devices || [];
      error = null;
    } catch (err) { error = err; }
    if (alive) render();
  }

  function matches(d) {
    const q = state.q.trim().toLowerCase();
    if (!q) return true;
    return [d.id, d.name, d.manufacturer, d.model, d.remote, d.site, d.link]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function render() {
    if (error) { clear(listBox, errorBox(error)); count.textContent = ""; return; }
    if (devices === null) return;
    const all = devices.filter(matches).sort((a, b) => (b.online - a.online) || a.id.localeCompare(b.id));
    const rows = all.slice(0, MAX_ROWS);  // tens of thousands of rows every 10 s would stall the page
    count.textContent = t("count", { n: all.length });
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.id : null;
    clear(listBox, all.length > MAX_ROWS ? h("div.notice.warn", {}, t("dev.more", { n: MAX_ROWS, total: all.length })) : null, table([
      { label: t("col.id"), cell: (d) => mono(d.id), cls: "id" },
      { label: t("col.name"), cell: (d) => d.name || "—" },
      { label: t("col.status"), cell: (d) => onlinePill(d.online) },
      { label: t("col.transport"), cell: (d) => (d.transport || "—").toUpperCase() },
      { label: t("col.remote"), cell: (d) => mono(d.remote || "—") },
      { label: t("col.keepalive"), cell: (d) => timeCell(d.last_keepalive) },
      { label: t("col.channels"), cell: (d) => String(d.channels ?? 0), cls: "num" },
      { label: t("col.vendor"), cell: (d) => [d.manufacturer, d.model].filter(Boolean).join(" / ") || "—" },
    ], rows, {
      rowAttrs: (d) => ({
        tabindex: "0", class: `clickable${d.id === state.selected ? " selected" : ""}`,
        "aria-selected": d.id === state.selected ? "true" : "false", dataset: { id: d.id },
        on: {
          click: () => select(d.id),
          keydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(d.id); } },
        },
      }),
    }));
    if (focused) {  // keep the keyboard user's place across the periodic refresh
      const again = listBox.querySelector(`tr[data-id="${focused}"]`);
      if (again) again.focus();
    }
  }

  function select(id) {
    state.selected = id;
    history.replaceState(null, "", `#devices/${id}`);
    render();
    loadDetail();
  }

  async function loadDetail() {
    const id = state.selected;
    if (!id) { clear(detailBox, h("p.dim.pad", {}, t("dev.pick"))); return; }
    if (!detailBox.dataset.id || detailBox.dataset.id !== id) clear(detailBox, loading());
    detailBox.dataset.id = id;
    let dev;
    let channels = [];
    let tree = null;
    try {
      [dev, channels, tree] = await Promise.all([
        api(`/api/v1/devices/${id}`),
        api(`/api/v1/devices/${id}/channels`).then((c) => c.channels || []),
        api(`/api/v1/devices/${id}/tree`).catch(() => null),  // the tree is extra: never block the detail
      ]);
    } catch (err) {
      if (alive && state.selected === id) clear(detailBox, errorBox(err));
      return;
    }
    if (alive && state.selected === id) renderDetail(dev, channels, tree);
  }

  function renderDetail(dev, channels, tree) {
    const msg = h("span.msg", { role: "status" });
    const catalogBtn = h("button.primary", { type: "button", on: { click: async () => {
      catalogBtn.disabled = true;
      msg.className = "msg dim";
      msg.textContent = t("loading");
      try {
        const r = await api(`/api/v1/devices/${dev.id}/catalog`, { method: "POST" });
        msg.className = r.complete ? "msg ok" : "msg warn";
        msg.textContent = r.complete ? t("dev.catalog.done", { n: r.channels.length })
          : t("dev.catalog.partial", { n: r.channels.length, sum: r.sum_num ?? "?" });
        renderChannels(r.channels || []);
      } catch (err) {
        msg.className = "msg bad";
        msg.textContent = errorText(err);
      } finally { catalogBtn.disabled = false; }
    } } }, t("dev.catalog"));
    const kv = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    const chanBox = h("div");
    const renderChannels = (list) => clear(chanBox, table([
      { label: t("col.channel"), cell: (c) => mono(c.channel_id), cls: "id" },
      { label: t("col.name"), cell: (c) => c.name || "—" },
      { label: t("col.status"), cell: (c) => (c.status || "").toUpperCase() === "ON" ? pill("ON", "ok") : pill(c.status || "—", "muted") },
      { label: "", cell: (c) => h("a.button.small", { href: `#live/${c.channel_id}/${c.device_id}` }, t("play")) },
    ], list));
    renderChannels(channels);
    clear(detailBox,
      h("div.detail-head", {}, h("div", {}, h("h2.mono", {}, dev.id), h("div.dim", {}, dev.name || "")),
        h("button.ghost.small", { type: "button", "aria-label": t("dev.close"), on: { click: () => {
          state.selected = ""; history.replaceState(null, "", "#devices"); render(); loadDetail();
        } } }, "×")),
      h("dl.kv", {},
        kv(t("col.status"), onlinePill(dev.online)),
        kv(t("col.remote"), mono(`${(dev.transport || "").toUpperCase()} ${dev.remote || "—"}`)),
        kv(t("col.keepalive"), timeCell(dev.last_keepalive)),
        kv(t("dev.registered"), mono(fmtTime(dev.registered_at))),
        kv(t("col.vendor"), [dev.manufacturer, dev.model].filter(Boolean).join(" / ") || "—"),
        kv(t("dev.firmware"), dev.firmware || "—"),
        kv(t("dev.ua"), dev.user_agent || "—"),
        kv(`${t("col.site")} / ${t("col.link")}`, `${dev.site || "—"} / ${dev.link || "—"}`)),
      h("div.row", {}, catalogBtn, msg),
      tree && tree.nodes > 0 ? [h("h3", {}, t("dev.tree", { nodes: tree.nodes, n: tree.channels })), treeView(dev.id, tree.tree)] : null,
      h("h3", {}, `${t("dev.channels")} (${channels.length})`), chanBox,
      h("h3", {}, t("dev.events")),
      table([
        { label: t("col.time"), cell: (e) => mono(fmtTime(e.ts)) },
        { label: t("col.kind"), cell: (e) => pill(e.kind, /offline|lost|refus|fail/.test(e.kind) ? "bad" : "muted") },
        { label: t("col.detail"), cell: (e) => h("span.small", {}, brief(e.detail)) },
      ], dev.events || []));
  }

  /** A lower platform's catalog tree: org nodes as <details> (top level open), channels as leaves. */
  function treeView(deviceId, root) {
    const leaves = (n) => n.kind === "channel" ? 1 : (n.children || []).reduce((a, c) => a + leaves(c), 0);
    const leaf = (c) => h("li.tree-leaf", { dataset: { id: c.id } }, mono(c.id), " ", c.name || "—", " ",
      (c.status || "").toUpperCase() === "ON" ? pill("ON", "ok") : pill(c.status || "—", "muted"), " ",
      c.exposed ? h("a.button.small", { href: `#live/${c.id}/${deviceId}` }, t("play"))
        : pill(t("dev.tree.hidden"), "warn"));
    const node = (n, depth) => n.kind === "channel" ? leaf(n) : h("li.tree-node", { dataset: { id: n.id } },
      h("details", { open: depth < 1 },
        h("summary", {}, h("span.pill.muted", {}, t(`dev.kind.${n.kind}`)), " ", n.name || n.id, " ",
          h("span.dim.small", {}, `${n.id} · ${t("dev.tree.n", { n: leaves(n) })}`)),
        h("ul.tree", {}, (n.children || []).map((c) => node(c, depth + 1)))));
    return h("ul.tree.tree-root", { "aria-label": t("dev.tree.label") }, (root.children || []).map((c) => node(c, 0)));
  }

  load();
  loadDetail();
  const timer = setInterval(() => { load(); }, 10000);
  return () => { alive = false; clearInterval(timer); };
}
