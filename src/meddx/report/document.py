"""A tiny document model (headings, paragraphs, tables, images) rendered two ways from the same blocks: HTML
(relative <img> links, opens from disk) and PDF (reportlab, see report.pdf)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.errors import ConfigError
from meddx.utils import atomic_write_text

CSS = """
body { font-family: DejaVu Sans, Arial, sans-serif; max-width: 1000px; margin: 1.5em auto; color: #222; }
h1 { font-size: 1.5em; border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { font-size: 1.15em; color: #345; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
.notice { border: 2px solid #b35900; background: #fff4e5; padding: .6em .9em; font-weight: bold; }
.finding { font-size: 1.2em; }
.ood { border: 3px solid #b00020; background: #fde8ea; color: #b00020; padding: .6em .9em; font-weight: bold;
       font-size: 1.1em; }
.high { color: #1b6e1b; } .moderate { color: #8a6d00; } .borderline { color: #b00020; font-weight: bold; }
.phi { border: 2px solid #b00020; padding: .4em .8em; }
figure { margin: .6em 0; page-break-inside: avoid; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: .85em; color: #555; }
.small { font-size: .85em; color: #555; }
@page { size: A4; margin: 1.5cm; }
"""


@dataclass
class Doc:
    """Ordered blocks: ("h1"|"h2", text), ("p", text, css_class), ("table", header, rows), ("img", rel_path, caption)."""

    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", str(text)))

    def p(self, text: str, cls: str = "") -> None:
        self.blocks.append(("p", str(text), cls))

    def table(self, header: list[str] | None, rows: list[list[Any]]) -> None:
        self.blocks.append(("table", header, [[_cell(c) for c in r] for r in rows]))

    def img(self, rel_path: str, caption: str = "") -> None:
        self.blocks.append(("img", str(rel_path), str(caption)))


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def to_html(doc: Doc) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(doc.title)}</title><style>{CSS}</style></head><body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            cls = f' class="{e(block[2])}"' if block[2] else ""
            out.append(f"<p{cls}>{e(block[1])}</p>")
        elif kind == "table":
            _, header, rows = block
            out.append("<table>")
            if header:
                out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            for r in rows:
                if not header and len(r) == 2:  # key/value table
                    out.append(f"<tr><th>{e(r[0])}</th><td>{e(r[1])}</td></tr>")
                else:
                    out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
        elif kind == "img":
            _, src, caption = block
            out.append(f'<figure><img src="{e(src)}" alt="{e(caption or src)}">'
                       + (f"<figcaption>{e(caption)}</figcaption>" if caption else "") + "</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


PDF_ENGINES = ("auto", "reportlab")


def write_pdf(doc: Doc, html_path: str | Path, pdf_path: str | Path, engine: str = "auto") -> str:
    """Write the PDF with reportlab from the same blocks as the HTML (pure pip, a core dependency); returns the
    engine used. WeasyPrint (printing the HTML; needs Pango from the system) was measured and dropped: with the
    report's CSS it gave 3 / 5 / 5 pages for a 2D / sequence / volume study where reportlab gives 1 / 2 / 2, and
    was slower (tests/report/test_pdf.py checks the layout)."""
    if engine not in PDF_ENGINES:
        raise ConfigError(f"unknown PDF engine {engine!r}; choose one of {', '.join(PDF_ENGINES)}")
    from meddx.report.pdf import write_pdf_reportlab

    write_pdf_reportlab(doc, Path(html_path).parent, pdf_path)
    return "reportlab"


def write_html(doc: Doc, path: str | Path) -> Path:
    return atomic_write_text(path, to_html(doc))
