"""GX Data Docs that render offline (`delivery-lake docs` / `make docs` rebuilds the site).

GX's page templates load Bootstrap, jQuery, Font Awesome, Vega and the GX logo from public
CDNs, which this project cannot reach (and a browser stalls on them when offline). GX's
wheel ships no copy of those libraries, only its own stylesheet and fonts under
`static/`. So after every build each page is rewritten: remote `<link>`/`<script>` tags are
removed, remote images point to the local logo, and a small local stylesheet
(`static/styles/offline.css`, below) supplies the layout Bootstrap gave: readable tables,
cards, badges and green/red status colours. Pages stay static HTML; the collapsible
sections simply stay open and the index table is a plain (unsortable) table.
"""

from __future__ import annotations

import ast
import html as html_lib
import os
import re
from collections.abc import Iterable
from pathlib import Path

OFFLINE_CSS = """/* delivery_lake: local stand-in for the CDN Bootstrap GX Data Docs expect. */
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; \
color: #212529; background: #f8f9fa; }
.container, .container-fluid { padding: 1rem 2rem; max-width: 1400px; margin: 0 auto; }
.row { display: flex; flex-wrap: wrap; gap: 1rem; }
.col-md-2, .col-md-3 { flex: 0 0 18%; }
.col-md-8, .col-md-9, .col-md-10, .col-12, .col { flex: 1 1 60%; min-width: 0; }
nav, .navbar { background: #343a40; color: #fff; padding: .5rem 1rem; }
nav a, .navbar a { color: #fff; }
.card { background: #fff; border: 1px solid #dee2e6; border-radius: .25rem; margin-bottom: 1rem; }
.card-header { padding: .5rem 1rem; border-bottom: 1px solid #dee2e6; background: #f1f3f5; }
.card-body { padding: 1rem; overflow-x: auto; }
table, .table { border-collapse: collapse; width: 100%; margin-bottom: 1rem; }
th, td { border: 1px solid #dee2e6; padding: .35rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #e9ecef; }
.table-striped tbody tr:nth-of-type(odd), tbody tr:nth-child(odd) { background: #fbfbfc; }
.badge { display: inline-block; padding: .15em .45em; border-radius: .25rem; font-size: 85%; \
background: #6c757d; color: #fff; }
.badge-info, .badge-primary { background: #0d6efd; }
.badge-secondary { background: #6c757d; }
.text-danger, .fa-times { color: #c62828; }
.text-success, .fa-check-circle, .fa-check { color: #2e7d32; }
.text-warning { color: #b26a00; }
.fa-times::before { content: "\\2717"; }
.fa-check-circle::before, .fa-check::before { content: "\\2713"; }
.alert { padding: .75rem 1rem; border-radius: .25rem; border: 1px solid #dee2e6; background: #fff; }
.alert-danger { background: #fdecea; border-color: #f5c2c7; }
.alert-success { background: #e8f5e9; border-color: #badbcc; }
.collapse:not(.show) { display: block; }
.d-none { display: none; }
.mb-2 { margin-bottom: .5rem; } .mt-2 { margin-top: .5rem; } .p-2 { padding: .5rem; }
.sticky { position: static; }
img { max-width: 100%; }
ul.nav { list-style: none; padding-left: 0; }
ul.nav li { margin: .25rem 0; }
"""

_REMOTE_TAG = re.compile(
    r"""<(link|script)\b[^>]*\b(?:href|src)=["']https?://[^"']*["'][^>]*>(?:\s*</script>)?""", re.I
)
_REMOTE_IMG = re.compile(r"""(<img\b[^>]*\bsrc=)["']https?://[^"']*["']""", re.I)
_MARKER = "<!-- delivery_lake:offline -->"


_EMPTY_TABLE = re.compile(r'(<table\s+id="(?P<id>[^"]+)"[^>]*data-toggle="table"[^>]*>)\s*(</table>)')
_TABLE_DATA = (
    r"\$\('#{id}'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{{\s*"
    r"columns: (?P<columns>\[.*?\]),\s*data: (?P<data>\[.*?\]),\s*\n"
)


def render_tables(html: str) -> str:
    """Fill the tables GX leaves for bootstrap-table (a CDN script) to build in the browser.

    The index page's list of validations (status, run, asset, suite, link) is such a table:
    GX writes it empty with its rows as a literal in a script. Without the script the page
    would list nothing, so the rows are written into the table as static HTML here.
    """

    def fill(m: re.Match[str]) -> str:
        data = re.search(_TABLE_DATA.format(id=re.escape(m.group("id"))), html, re.S)
        if data is None:
            return m.group(0)
        try:
            columns = ast.literal_eval(data.group("columns"))
            rows = ast.literal_eval(data.group("data"))
        except (ValueError, SyntaxError):
            return m.group(0)
        head = "".join(f"<th>{html_lib.escape(str(c.get('title', c['field'])))}</th>" for c in columns)
        body = []
        for row in rows:
            link = row.get("_table_row_link_path")
            cells = []
            for c in columns:
                value = str(row.get(c["field"], ""))  # GX's own HTML fragments (icons, links)
                if link and c["field"] == "run_name":
                    value = f'<a href="{html_lib.escape(link)}">{value}</a>'
                cells.append(f"<td>{value}</td>")
            status = html_lib.escape(str(row.get("_validation_success_text", "")))
            body.append(f'<tr data-status="{status}">{"".join(cells)}</tr>')
        return f"{m.group(1)}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>{m.group(3)}"

    return _EMPTY_TABLE.sub(fill, html)


def make_offline(site_dir: Path, pages: Iterable[Path] | None = None) -> int:
    """Rewrite pages of the site (`pages`, default every page) to use local assets only; returns
    pages rewritten. A check passes the pages it just built: the site grows with every
    validation ever run, and re-reading all of it per check grew with it."""
    site_dir = Path(site_dir)
    css = site_dir / "static" / "styles" / "offline.css"
    css.parent.mkdir(parents=True, exist_ok=True)
    if not css.exists() or css.read_text() != OFFLINE_CSS:
        css.write_text(OFFLINE_CSS)
    done = 0
    for page in site_dir.rglob("*.html") if pages is None else (Path(p) for p in pages):
        if not page.exists():
            continue
        html = page.read_text(encoding="utf-8")
        if _MARKER in html and not _REMOTE_TAG.search(html) and not _EMPTY_TABLE.search(html):
            continue
        rel = os.path.relpath(site_dir / "static", page.parent).replace(os.sep, "/")
        html = _REMOTE_TAG.sub("", html)
        html = render_tables(html)
        html = _REMOTE_IMG.sub(rf'\1"{rel}/images/logo-long.png"', html)
        if _MARKER not in html:
            html = html.replace(
                "</head>", f'{_MARKER}<link rel="stylesheet" href="{rel}/styles/offline.css"></head>', 1
            )
        tmp = page.with_suffix(".html.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, page)
        done += 1
    return done
