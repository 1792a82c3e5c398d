// 报表 Reports (ops): kind + period → links to /api/v1/reports/{kind}?period=…&format=html|xlsx|csv.
// The links carry ?token= because a new tab or a download cannot send the Authorization header.
import { withToken } from "./api.js";
import { clear, h } from "./dom.js";
import { t } from "./i18n.js";

const KINDS = ["daily-faults", "availability", "link-fees", "deductions", "reconciliation", "annual-offline"];
const DEFAULT_SCALE = { "daily-faults": "day", reconciliation: "day", "annual-offline": "year" };
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

  function period() { return inputs[scale.value].value; }

  function render() {
    clear(periodBox, inputs[scale.value]);
    const p = period();
    const url = (format) => withToken(`/api/v1/reports/${kind.value}?period=${encodeURIComponent(p)}&format=${format}`);
    clear(links,
      h("a.button.primary", { href: url("html"), target: "_blank", rel: "noopener noreferrer" }, t("rp.open")),
      h("a.button.ghost", { href: url("xlsx"), download: `${kind.value}-${p}.xlsx` }, "XLSX"),
      h("a.button.ghost", { href: url("csv"), download: `${kind.value}-${p}.csv` }, "CSV"));
  }

  kind.addEventListener("change", () => { scale.value = DEFAULT_SCALE[kind.value] || "month"; render(); });
  scale.addEventListener("change", render);
  for (const i of Object.values(inputs)) i.addEventListener("change", render);
  scale.value = "day";
  root.append(h("div.pane.narrow", {},
    h("form.card.form", { "aria-label": t("tab.reports"), on: { submit: (e) => e.preventDefault() } },
      h("div.field", {}, h("label", { for: "rp-kind" }, t("rp.kind")), kind),
      h("div.field", {}, h("label", { for: "rp-scale" }, t("rp.period")), h("div.row", {}, scale, periodBox)),
      links,
      h("p.hint", {}, t("rp.hint")))));
  render();
}
