"""The pieces of a self-contained HTML page: one file with its CSS inline, pictures as data
URIs, no script, and a Content-Security-Policy that forbids loading anything from elsewhere
(so a browser fetches nothing but the file itself)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; color: #1d1d1f;
       background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #e4e4e8; }
h3 { font-size: 15px; margin: 0 0 6px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f2f2f5;
       padding: 1px 4px; border-radius: 3px; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #dcdce2; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #6b6b76; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
.plots figure { max-width: 49%; }
.plots figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e8; }
.toc { columns: 2; font-size: 13px; }
.toc li { break-inside: avoid; }
.product { border: 1px solid #d8d8e0; border-radius: 8px; padding: 12px 14px; margin: 16px 0;
           background: #fcfcfd; }
.product-head { display: flex; gap: 14px; align-items: flex-start; }
.product-text { white-space: pre-wrap; margin: 4px 0; max-height: 9em; overflow: auto; }
.scores { font-variant-numeric: tabular-nums; }
.review { display: flex; gap: 12px; border-top: 1px solid #ececf0; padding: 8px 0; }
.review .rank { min-width: 64px; font-weight: 600; }
.review .body { flex: 1; }
.review .text { white-space: pre-wrap; margin: 2px 0; }
.label { display: inline-block; min-width: 18px; text-align: center; border-radius: 9px;
         padding: 0 6px; color: #fff; font-weight: 600; }
.label-rel { background: #2e7d32; }
.label-irr { background: #9e9ea8; }
mark.probe { background: #ffe066; padding: 0 1px; border-radius: 2px; }
figure { margin: 0; display: inline-block; vertical-align: top; }
figure img { border: 1px solid #d0d0d8; border-radius: 3px; display: block; }
figcaption { font-size: 11px; max-width: 170px; color: #444; overflow-wrap: anywhere; }
.plots figcaption { max-width: none; }
figcaption ol { margin: 2px 0 0; padding-left: 18px; }
.photos { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 4px; }
.review .photos { margin-top: 0; max-width: 360px; }
"""


def esc(value: object) -> str:
    """Text made safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
            "</body></html>\n")


def table(header: Sequence[str], rows: Iterable[Sequence[object]],
          numeric: Sequence[int] = ()) -> str:
    """A table of escaped cells; columns in `numeric` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td class=\"num\">{esc(c)}</td>" if i in numeric else f"<td>{esc(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text_html: str) -> str:
    return f"<p class=\"note\">{text_html}</p>"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"
