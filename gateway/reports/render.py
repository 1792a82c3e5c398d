"""Render reports as CSV, XLSX and HTML (issue 5 §5). Pure: tables in, bytes/str out.

* CSV: UTF-8 with a BOM (Excel then opens Chinese text correctly), header = stable column keys
  (contract.md), one table (the report's `csv_index`), no total row, machine values (ISO 8601
  times with offset, seconds, ratios).
* XLSX (openpyxl): one sheet per table; title and meta lines, a bold header row with the pane
  frozen below it, number formats per column kind, column widths from the content (CJK counted
  double), a bold total row, and signature fields on the monthly deduction sheet.
* Text from outside (channel names come from device catalogs) is never a formula: a CSV text cell
  starting with = + - @ TAB or CR gets a leading single quote (OWASP CSV-injection rule; numbers,
  e.g. a negative money value, are left alone), and XLSX writes such text as a string cell with
  Excel's quote prefix, never as a formula.
* HTML: one self-contained page (no scripts, no CDN: the police network is offline), a bar chart
  as inline SVG, `lang="zh-CN"` or `"en"`.
"""

from __future__ import annotations

import csv
import html
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any

from gateway.health.timeline import UTC8
from gateway.reports.i18n import t, value
from gateway.reports.table import Table

NUMBER_FORMATS = {
    "int": "0",
    "seconds": "#,##0.###",
    "ratio": "0.00%",
    "money": "#,##0.00",
    "hours": "0.000",
    "datetime": "yyyy-mm-dd hh:mm:ss",
}


@dataclass(slots=True)
class Report:
    """One report: its tables (several sheets in XLSX) and which one is the CSV."""

    kind: str
    tables: list[Table]
    csv_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """OWASP CSV injection: a leading quote makes a spreadsheet read the cell as text."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _local(ts: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def _csv_cell(v: Any, kind: str, tz: tzinfo) -> str:
    if v is None:
        return ""
    if kind == "datetime" and isinstance(v, (int, float)):
        return _local(v, tz).isoformat(timespec="seconds")
    if kind == "ratio" and isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, str):
        return neutralise(v)
    return str(v)


def to_csv(report: Report, *, tz: tzinfo = UTC8) -> bytes:
    """The report's main table as CSV bytes (UTF-8 with BOM, CRLF line ends as RFC 4180 says)."""
    table = report.tables[report.csv_index]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(table.column_keys())
    for row in table.rows:
        w.writerow([_csv_cell(row.get(c.key), c.kind, tz) for c in table.columns])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def _display(v: Any, kind: str, column: str, lang: str, tz: tzinfo) -> str:
    if v is None:
        return ""
    if kind == "datetime" and isinstance(v, (int, float)):
        return _local(v, tz).strftime("%Y-%m-%d %H:%M:%S")
    if kind == "ratio" and isinstance(v, (float, Decimal)):
        return f"{float(v) * 100:.2f}%"
    if kind == "money" and isinstance(v, Decimal):
        return f"{v:,.2f}"
    if kind == "seconds" and isinstance(v, Decimal):
        return f"{v:,}"
    return str(value(column, v, lang))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _meta_lines(table: Table, report: Report, lang: str) -> list[tuple[str, str]]:
    merged = {**table.meta, **report.meta}
    out = []
    for key, v in merged.items():
        if v is None or key == "policy_body":
            continue
        if key == "group_by":
            v = t(f"group.{v}", lang)
        if key == "intact_rate" and isinstance(v, float):
            v = f"{v * 100:.2f}%"
        out.append((t(f"meta.{key}", lang), str(v)))
    return out


def _no_formulas(ws: Any) -> None:
    """openpyxl turns any str starting with '=' into a formula: we never write one, so every such
    cell is outside text and becomes a string (quotePrefix: editing it in Excel keeps it text)."""
    for row in ws.iter_rows():
        for cell in row:
            if cell.data_type == "f" or (isinstance(cell.value, str) and cell.value.startswith(FORMULA_PREFIXES)):
                cell.data_type = "s"
                cell.quotePrefix = True


def to_xlsx(report: Report, *, lang: str = "zh", tz: tzinfo = UTC8) -> bytes:
    """The report as an .xlsx workbook (bytes)."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    bold = Font(bold=True)
    head_fill = PatternFill("solid", fgColor="DDEBF7")
    thin = Side(style="thin", color="999999")
    for table in report.tables:
        title = t(f"title.{table.kind}", lang)
        ws = wb.create_sheet(title[:31].replace("/", "-"))
        ws.append([title])
        ws.cell(row=1, column=1).font = Font(bold=True, size=14)
        meta = _meta_lines(table, report, lang)
        for label, text in meta:
            ws.append([label, text])
        header_row = len(meta) + 3  # title, meta lines, one blank row
        ws.append([None])
        headers = [t(c.key, lang) for c in table.columns]
        ws.append(headers)
        for col in range(1, len(headers) + 1):
            cell = ws.cell(row=header_row, column=col)
            cell.font, cell.fill = bold, head_fill
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
            cell.border = Border(bottom=thin)
        widths = [_width(h) for h in headers]
        rows = list(table.rows) + ([table.total] if table.total else [])
        r = header_row
        for i, row in enumerate(rows):
            r += 1
            is_total = table.total is not None and i == len(rows) - 1
            values = []
            for j, c in enumerate(table.columns):
                v: Any = row.get(c.key)
                if is_total and v == "*":
                    v = t("total", lang)
                if c.kind == "datetime" and isinstance(v, (int, float)):
                    v = _local(v, tz).replace(tzinfo=None)
                elif isinstance(v, Decimal):
                    v = float(v)
                elif c.kind == "text":
                    v = value(c.key, v, lang)
                values.append(v)
                shown = _display(row.get(c.key), c.kind, c.key, lang, tz) if v is not None else ""
                widths[j] = max(widths[j], _width(shown))
            ws.append(values)
            for j, c in enumerate(table.columns, start=1):
                cell = ws.cell(row=r, column=j)
                if c.kind in NUMBER_FORMATS:
                    cell.number_format = NUMBER_FORMATS[c.kind]
                if is_total:
                    cell.font = bold
        ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
        for j, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(j)].width = min(60, max(8, w + 2))
        if table.signatures:
            r += 2
            for key in table.signatures:
                r += 1
                ws.cell(row=r, column=1, value=t(key, lang)).font = bold
                ws.cell(row=r, column=3, value="________________________")
        _no_formulas(ws)
        if table.rows:
            ws.auto_filter.ref = f"A{header_row}:{get_column_letter(len(headers))}{header_row + len(table.rows)}"
    body = next((tb.meta["policy_body"] for tb in report.tables if tb.meta.get("policy_body")), None)
    if body:
        # the sheet states the policy it was computed under, field by field (issue 11)
        import json

        ws = wb.create_sheet(t("meta.policy_body", lang)[:31])
        ws.append([t("meta.policy_body", lang)])
        ws.cell(row=1, column=1).font = Font(bold=True, size=14)
        version = next((tb.meta.get("policy_version") for tb in report.tables if tb.meta.get("policy_version")), "")
        ws.append([t("meta.policy_version", lang), str(version)])
        for key, val in json.loads(body).items():
            ws.append([key, json.dumps(val, ensure_ascii=False) if isinstance(val, list) else str(val)])
        ws.column_dimensions["A"].width = 34
        ws.column_dimensions["B"].width = 40
    stamp = _stamp(report, tz)
    wb.properties.creator = "gbgate"
    wb.properties.created = stamp
    buf = io.BytesIO()
    wb.save(buf)
    return _fixed_zip(buf.getvalue(), stamp)


_EPOCH_STAMP = datetime(2000, 1, 1)


def _stamp(report: Report, tz: tzinfo) -> datetime:
    """The workbook's created/modified time (naive UTC): when the report was generated, so that
    the same report always gives the same bytes (issue 11.9); a fixed date when unknown."""
    text = report.meta.get("generated_at")
    if not isinstance(text, str):
        return _EPOCH_STAMP
    try:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    except ValueError:
        return _EPOCH_STAMP
    return local.astimezone(UTC).replace(tzinfo=None)


def _fixed_zip(data: bytes, stamp: datetime) -> bytes:
    """Rewrite an XLSX so its bytes depend on its content only: openpyxl stamps docProps/core.xml
    `modified` with the wall clock and every zip entry with the local time of saving."""
    import re
    import zipfile

    iso = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)", rb"\g<1>" + iso.encode() + rb"\g<2>", body
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o600 << 16
            dst.writestr(fixed, body)
    return out.getvalue()


def svg_bar_chart(labels: list[str], values: list[float], *, percent: bool, width: int = 760) -> str:
    """A horizontal bar chart as inline SVG (at most 30 bars, the caller chooses which)."""
    bar_h, gap, left, right = 18, 6, 230, 80
    height = len(values) * (bar_h + gap) + gap + 20
    top = max(values, default=0.0)
    scale_max = 1.0 if percent else (top or 1.0)
    inner = width - left - right
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">'
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = gap + i * (bar_h + gap)
        w = max(0.0, inner * (v / scale_max)) if scale_max else 0.0
        colour = "#c0392b" if percent and v < 0.9 else "#e67e22" if percent and v < 0.98 else "#2e86c1"
        text = f"{v * 100:.2f}%" if percent else f"{v:,.2f}"
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{html.escape(label[:32])}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + 13}">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _chart(table: Table, lang: str) -> str:
    if not table.chart or not table.rows:
        return ""
    label_key, value_key = table.chart
    kind = next((c.kind for c in table.columns if c.key == value_key), "text")
    points = [(str(r.get(label_key) or r.get("name") or ""), r.get(value_key)) for r in table.rows]
    pts = [(lab, float(v)) for lab, v in points if isinstance(v, (int, float, Decimal))]
    if not pts:
        return ""
    percent = kind == "ratio"
    pts.sort(key=lambda p: p[1], reverse=not percent)  # worst first: lowest availability, highest money
    pts = pts[:30]
    svg = svg_bar_chart([p[0] for p in pts], [p[1] for p in pts], percent=percent)
    return f'<figure class="chart"><figcaption>{html.escape(t(value_key, lang))}</figcaption>{svg}</figure>'


_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:28px 0 8px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px;color:#444}
dl.meta dt{font-weight:bold} table{border-collapse:collapse;font-size:12px;margin-top:8px}
th,td{border:1px solid #bbb;padding:3px 6px} th{background:#ddebf7;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums} tfoot td{font-weight:bold;background:#f4f4f4}
.signatures{margin-top:36px;display:grid;grid-template-columns:repeat(2,1fr);gap:28px 48px;font-size:14px}
.signatures div{border-bottom:1px solid #333;padding-bottom:24px}
figure.chart{margin:12px 0} figcaption{font-size:13px;font-weight:bold}
"""


def _html_table(table: Table, report: Report, lang: str, tz: tzinfo, heading: str) -> str:
    out = [f"<h2>{html.escape(heading)}</h2>"] if heading else []
    meta = _meta_lines(table, report, lang)
    if meta:
        out.append('<dl class="meta">')
        out += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in meta]
        out.append("</dl>")
    out.append(_chart(table, lang))
    out.append("<table><thead><tr>")
    out += [f"<th>{html.escape(t(c.key, lang))}</th>" for c in table.columns]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>")
        for c in table.columns:
            cls = ' class="num"' if c.kind not in ("text", "datetime") else ""
            cell = _display(row.get(c.key), c.kind, c.key, lang, tz)
            out.append(f"<td{cls}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody>")
    if table.total:
        out.append("<tfoot><tr>")
        for c in table.columns:
            v = table.total.get(c.key)
            cell = t("total", lang) if v == "*" else _display(v, c.kind, c.key, lang, tz)
            cls = ' class="num"' if c.kind not in ("text", "datetime") else ""
            out.append(f"<td{cls}>{html.escape(cell)}</td>")
        out.append("</tr></tfoot>")
    out.append("</table>")
    if table.signatures:
        out.append('<div class="signatures">')
        out += [f"<div>{html.escape(t(k, lang))}</div>" for k in table.signatures]
        out.append("</div>")
    return "".join(out)


def to_html(report: Report, *, lang: str = "zh", tz: tzinfo = UTC8) -> str:
    """The report as one self-contained HTML page."""
    title = t(f"title.{report.kind}", lang)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for i, table in enumerate(report.tables):
        heading = "" if i == 0 else t(f"title.{table.kind}", lang)
        body.append(_html_table(table, report, lang, tz, heading))
    html_lang = "en" if lang == "en" else "zh-CN"
    return (
        f'<!DOCTYPE html><html lang="{html_lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )


def render(report: Report, fmt: str, *, lang: str = "zh", tz: tzinfo = UTC8) -> bytes:
    """CSV, XLSX or HTML bytes for `report`."""
    if fmt == "csv":
        return to_csv(report, tz=tz)
    if fmt == "xlsx":
        return to_xlsx(report, lang=lang, tz=tz)
    if fmt == "html":
        return to_html(report, lang=lang, tz=tz).encode("utf-8")
    raise ValueError(f"unknown report format {fmt!r}: csv, xlsx or html")
