// 拉流源 Pull sources (integrator, security; ops reads): RTSP/RTMP/file cameras published under a GB
// channel ID. The password is typed apart from the URL, never shown back (the list has user:***@).
import { api } from "./api.js";
import { askReason, clear, errorBox, errorText, fieldErrors, h, mono, pill, table, timeCell } from "./dom.js";
import { t } from "./i18n.js";

const FIELDS = ["channel_id", "url", "username", "password", "name", "site"];

/** rtsp://host/… + user + password → rtsp://user:password@host/… (both percent-encoded). */
export function withCredentials(url, user, password) {
  const m = url.match(/^([a-z][a-z0-9+.-]*:\/\/)(.*)$/i);
  if (!m || !user) return url;
  const auth = encodeURIComponent(user) + (password ? `:${encodeURIComponent(password)}` : "");
  return `${m[1]}${auth}@${m[2].replace(/^[^/@]*@/, "")}`;
}

export function mount(root) {
  let alive = true;
  const listBox = h("div");
  const flash = h("div.flash", { role: "status" });
  const form = buildForm();
  root.append(h("div.split.wide-left", {}, h("div.pane", {}, h("h2", {}, t("src.title")), flash, listBox),
    h("aside.side", {}, form.el)));

  async function load() {
    clear(listBox, h("div.notice.dim", {}, t("loading")));
    let data;
    try {
      data = await api("/api/v1/sources");
    } catch (err) {
      if (alive) clear(listBox, errorBox(err));
      form.el.hidden = err.status === 403;
      return;
    }
    if (!alive) return;
    const rows = data.sources || [];
    clear(listBox, h("div.dim.count", {}, t("count", { n: rows.length })), table([
      { label: t("col.id"), cell: (s) => mono(s.channel_id), cls: "id" },
      { label: t("col.name"), cell: (s) => s.name || "—" },
      { label: t("src.mode"), cell: (s) => (s.mode === "always_on" ? pill(t("src.always_on"), "ok")
        : pill(t("src.on_demand"), "muted")) },
      { label: t("src.url"), cell: (s) => mono(s.url) },
      { label: t("col.site"), cell: (s) => s.site || "—" },
      { label: t("col.updated"), cell: (s) => timeCell(s.updated_at) },
      { label: t("col.actions"), cell: (s) => h("div.actions", {},
        h("a.small", { href: `#live/${s.channel_id}` }, t("src.play")),
        h("button.small.ghost", { type: "button", on: { click: () => remove(s) } }, t("src.remove"))) },
    ], rows, { rowAttrs: (s) => ({ dataset: { id: s.channel_id } }) }));
  }

  async function remove(s) {
    const reason = await askReason(t("src.ask", { id: s.channel_id }), s.url);
    if (reason === null) return;
    try {
      await api(`/api/v1/sources/${s.channel_id}`, { method: "DELETE" });
      say("ok", t("src.removed", { id: s.channel_id }));
    } catch (err) {
      say("bad", `${s.channel_id}: ${errorText(err)}`);
    }
    load();
  }

  function say(kind, text) { clear(flash, h(`div.notice.${kind}`, {}, text)); }

  function buildForm() {
    const inputs = {};
    const errors = {};
    const formError = h("p.field-error", { role: "alert" });
    const field = (name, label, attrs = {}) => {
      const id = `src-${name}`;
      const input = h("input", { id, name, "aria-describedby": `${id}-err`, autocomplete: "off", ...attrs });
      inputs[name] = input;
      errors[name] = h("p.field-error", { id: `${id}-err` });
      input.addEventListener("input", () => { input.removeAttribute("aria-invalid"); errors[name].textContent = ""; });
      return h("div.field", {}, h("label", { for: id }, label), input, errors[name]);
    };
    const mode = h("select", { id: "src-mode", name: "mode" },
      h("option", { value: "on_demand" }, t("src.on_demand")), h("option", { value: "always_on" }, t("src.always_on")));
    const submit = h("button.primary", { type: "submit" }, t("wl.save"));
    const el = h("form.card.form", { novalidate: true, "aria-label": t("src.add") },
      h("h2", {}, t("src.add")),
      h("p.hint", {}, t("src.hint")),
      field("channel_id", t("src.channel"), { class: "mono", inputmode: "numeric", maxlength: "20", required: true }),
      field("url", t("src.url"), { class: "mono", placeholder: "rtsp://10.1.2.3:554/Streaming/Channels/101", required: true }),
      h("div.two", {}, field("username", t("src.user")),
        field("password", t("f.password"), { type: "password", autocomplete: "new-password" })),
      field("name", t("f.name")),
      h("div.two", {}, field("site", t("f.site")),
        h("div.field", {}, h("label", { for: "src-mode" }, t("src.mode")), mode)),
      formError, submit);

    const { show: showError, reset } = fieldErrors(inputs, errors, formError);

    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      reset();
      const v = (n) => inputs[n].value.trim();
      if (!/^\d{20}$/.test(v("channel_id"))) { showError("channel_id", t("live.badid")); return; }
      const body = { channel_id: v("channel_id"), url: withCredentials(v("url"), v("username"), inputs.password.value),
        mode: mode.value, name: v("name"), site: v("site") };
      submit.disabled = true;
      try {
        const saved = await api("/api/v1/sources", { method: "POST", body });
        say("ok", t("src.saved", { id: saved.channel_id }));
        for (const n of FIELDS) inputs[n].value = "";
        load();
      } catch (err) {
        if (err.status === 403 && err.code === "not_admitted") {
          showError("url", err.message);      // the admission's reason, next to the URL
        } else if (err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 403) {
          showError(err.field, err.message);
        } else {
          formError.textContent = errorText(err);
        }
      } finally { submit.disabled = false; }
    });

    return { el };
  }

  load();
  return () => { alive = false; };
}
