"""The pieces of a self-contained HTML page: the terminal's own Rich tables as HTML, matplotlib
figures as inline SVG, a results table that sorts and filters in the page, and the page
around them (inline CSS and JavaScript; nothing the page asks a network for)."""

from __future__ import annotations

import html
import io
import json
from typing import Any

from rich.console import Console, RenderableType

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0; color: #1d1d1f; background: #fbfbfd; }
header { padding: 18px 32px; background: #24292f; color: #fff; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; opacity: .8; font-size: 13px; }
nav { padding: 8px 32px; background: #eef1f4; font-size: 13px; position: sticky; top: 0; z-index: 2; }
nav a { margin-right: 14px; color: #0b57d0; text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { margin: 22px 0; } h2 { font-size: 17px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; } h3 { font-size: 14px; }
pre.term { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px; overflow-x: auto; font-size: 12px; line-height: 1.2;
  font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
pre.term code { font-family: inherit; }
table.kv, table.results { border-collapse: collapse; font-size: 12.5px; background: #fff; }
table.kv td, table.results td, table.results th { border: 1px solid #d0d7de; padding: 3px 8px; white-space: nowrap; }
div.scroll { overflow-x: auto; max-width: 100%; }
table.kv td:first-child { color: #57606a; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.hash { font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: 11.5px; }
table.results th { background: #f3f5f7; cursor: pointer; user-select: none; white-space: nowrap; }
table.results th.sorted-asc::after { content: ' \\25B2'; } table.results th.sorted-desc::after { content: ' \\25BC'; }
input.filter { margin: 6px 0; padding: 4px 8px; width: 320px; font-size: 13px; }
.figure svg { max-width: 100%; height: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 6px 0; }
.note { color: #57606a; font-size: 13px; }
"""

# sorting by a header's column (numbers by data-v, text otherwise); filtering rows by every
# word typed (a word KEY=VALUE matches that column's text exactly)
SCRIPT = """
document.querySelectorAll('table.results').forEach(function (table) {
  var body = table.tBodies[0], heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = !th.classList.contains('sorted-asc');
      heads.forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y), missing = (x === '') - (y === '');
        if (missing) { return missing; }
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var box = document.getElementById(table.id + '-filter');
  if (!box) { return; }
  box.addEventListener('input', function () {
    var words = box.value.trim().toLowerCase().split(/\\s+/).filter(Boolean);
    var names = heads.map(function (h) { return h.dataset.key.toLowerCase(); });
    Array.from(body.rows).forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (w) {
        var kv = w.split('=');
        if (kv.length === 2 && names.indexOf(kv[0]) >= 0) { return row.cells[names.indexOf(kv[0])].textContent.trim().toLowerCase() === kv[1]; }
        return text.indexOf(w) >= 0;
      });
    });
    document.getElementById(table.id + '-count').textContent = Array.from(body.rows).filter(function (r) { return !r.hidden; }).length;
  });
});
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def terminal(*renderables: RenderableType, width: int = 160) -> str:
    """What the terminal prints for `renderables` (the same Rich tables), as HTML with inline styles."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system="truecolor", highlight=False, safe_box=True)
    for item in renderables:
        console.print(item)
    return console.export_html(inline_styles=True, code_format='<pre class="term"><code>{code}</code></pre>')


def svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG (text as paths: no font is fetched)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return '<div class="figure">' + text[text.index("<svg"):] + "</div>"


def key_values(pairs: list[tuple[str, Any]], hashes: bool = False) -> str:
    rows = "".join(f'<tr><td>{esc(k)}</td><td class="{"hash" if hashes else ""}">{esc(v)}</td></tr>' for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def results_table(table_id: str, columns: list[tuple[str, str]], rows: list[dict[str, Any]], shown: dict[str, Any]) -> str:
    """A table that sorts by any column (click its header) and filters as one types; `columns`
    are (key, header); each cell shows shown[key](value) (else the value) and sorts by the value."""
    head = "".join(f'<th data-key="{esc(key)}">{esc(header)}</th>' for key, header in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            text = "" if value is None else shown[key](value) if key in shown else value
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            sort_value = json.dumps(value) if numeric else esc("" if value is None else value)
            cells.append(f'<td data-v="{sort_value}"{" class=num" if numeric else ""}>{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<input class="filter" id="{table_id}-filter" placeholder="filter: words, or column=value (e.g. status=complete)">'
            f' <span class="note"><span id="{table_id}-count">{len(rows)}</span> of {len(rows)} rows; click a header to sort</span>'
            f'<div class="scroll"><table class="results" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: `sections` are (anchor, heading, HTML)."""
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{content}</section>' for anchor, heading, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
            f'script-src \'unsafe-inline\'; img-src data:">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav><main>{body}</main>"
            f"<script>{SCRIPT}</script></body></html>")
