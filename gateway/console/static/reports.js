// 报表 Reports (ops): kind + period → /api/v1/reports/{kind}?period=…&format=html|xlsx|csv.
// The API refuses ?token= (it would land in history and logs), so each button fetches the report
// with the Authorization header and hands the browser a blob: a new tab (HTML) or a download.
import { api } from "./api.js";
import { clear, h } from "./dom.js";
import { t } from "./i18n.js";

const KINDS = ["daily-faults", "availability", "link-fees", "deductions", "reconciliation", "annual-offline", "repairs"];
const DEFAULT_SCALE = { "daily-faults": "day", reconciliation: "day", repairs: "day", "annual-offline": "year" };
const pad = (n) => String(n).padStart(2, "0");

export function mount(root) {
  const now = new Date();
  const today = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
  const links = h("div.report-links");
  const kind = h("select", { id: "rp-kind" }, KINDS.map((k) => h("option", { value: k }, `${t(`rp.${k}`)} (${k})`)));
  const scale = h("select", { id: "rp-scale", "aria-label": t("rp.period") },
    ["day", "month", "year"].map((s) => h("option", { value: s }, t(`rp.${s}`))));
  const inputs = {
    day: h("input.mono", { type: "date", value: today, "aria-label": t("rp.day") }),
    month: h("input.mono", { type: "month", value: today.slice(0, 7), "aria-label": t("rp.month") }),
    year: h("input.mono", { type: "number", min: "2000", max: "2100", value: String(now.getFullYear()), "aria-label": t("rp.year") }),
  };
  const periodBox = h("span");
  const status = h("div");

  function period() { return inputs[scale.value].value; }

  function render() {
    clear(periodBox, inputs[scale.value]);
    const p = period();
    const url = (format) => `/api/v1/reports/${kind.value}?period=${encodeURIComponent(p)}&format=${format}`;
    const get = (format) => async (e) => {
      e.preventDefault();
      const tab = format === "html" ? window.open("about:blank", "_blank") : null;  // before the await: not a popup
      const resp = await api(url(format), { raw: true }).catch(() => null);
      if (!resp || !resp.ok) {
        if (tab) tab.close();
        clear(status, h("div.notice.warn", {}, `${t("rp.kind")}: HTTP ${resp ? resp.status : 0}`));
        return;
      }
      clear(status);
      const href = URL.createObjectURL(await resp.blob());
      if (tab) tab.location.href = href;
      else h("a", { href, download: `${kind.value}-${p}.${format}` }).click();
      setTimeout(() => URL.revokeObjectURL(href), 60_000);
    };
    clear(links,
      h("a.button.primary", { href: "#", on: { click: get("html") } }, t("rp.open")),
      h("a.button.ghost", { href: "#", on: { click: get("xlsx") } }, "XLSX"),
      h("a.button.ghost", { href: "#", on: { click: get("csv") } }, "CSV"));
  }

  kind.addEventListener("change", () => { scale.value = DEFAULT_SCALE[kind.value] || "month"; render(); });
  scale.addEventListener("change", render);
  for (const i of Object.values(inputs)) i.addEventListener("change", render);
  scale.value = "day";
  root.append(h("div.pane.narrow", {},
    h("form.card.form", { "aria-label": t("tab.reports"), on: { submit: (e) => e.preventDefault() } },
      h("div.field", {}, h("label", { for: "rp-kind" }, t("rp.kind")), kind),
      h("div.field", {}, h("label", { for: "rp-scale" }, t("rp.period")), h("div.row", {}, scale, periodBox)),
      links, status,
      h("p.hint", {}, t("rp.hint")))));
  render();
}
