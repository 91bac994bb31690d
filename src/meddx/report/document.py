"""A tiny document model (headings, paragraphs, tables, images) rendered two ways: HTML (relative
<img> links, opens from disk) and PDF (WeasyPrint from that HTML when installed, else a
matplotlib PdfPages multi-page PDF drawn from the same blocks), so every report gets a PDF."""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.utils import atomic_path, atomic_write_text

CSS = """
body { font-family: DejaVu Sans, Arial, sans-serif; max-width: 1000px; margin: 1.5em auto; color: #222; }
h1 { font-size: 1.5em; border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { font-size: 1.15em; color: #345; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
.notice { border: 2px solid #b35900; background: #fff4e5; padding: .6em .9em; font-weight: bold; }
.finding { font-size: 1.2em; }
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


def weasyprint_available() -> bool:
    """True when WeasyPrint and its system libraries (Pango) import cleanly."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def write_pdf(doc: Doc, html_path: str | Path, pdf_path: str | Path, engine: str = "auto") -> str:
    """Write the PDF; returns the engine used ("weasyprint" or "matplotlib")."""
    pdf_path = Path(pdf_path)
    if engine in ("auto", "weasyprint") and weasyprint_available():
        import weasyprint

        with atomic_path(pdf_path, suffix=".pdf") as tmp:
            weasyprint.HTML(filename=str(html_path), base_url=str(Path(html_path).parent)).write_pdf(str(tmp))
        return "weasyprint"
    _write_pdf_matplotlib(doc, Path(html_path).parent, pdf_path)
    return "matplotlib"


# -- matplotlib fallback --------------------------------------------------------------------------

_PAGE = (8.27, 11.69)  # A4 inches
_TOP, _BOTTOM, _LEFT = 0.95, 0.05, 0.07


class _Pager:
    def __init__(self, pdf: Any, title: str):
        self.pdf, self.title, self.fig, self.y = pdf, title, None, 0.0

    def new(self) -> None:
        import matplotlib.pyplot as plt

        self.flush()
        self.fig = plt.figure(figsize=_PAGE)
        self.y = _TOP

    def flush(self) -> None:
        import matplotlib.pyplot as plt

        if self.fig is not None:
            self.fig.text(0.5, 0.02, self.title, ha="center", fontsize=7, color="#666")
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def need(self, height: float) -> None:
        if self.fig is None or self.y - height < _BOTTOM:
            self.new()

    def text(self, text: str, size: float = 9.0, weight: str = "normal", colour: str = "black",
             width: int | None = None) -> None:
        width = width or int(100 * 9.0 / size * (0.9 if weight == "bold" else 1.0))
        lines = []
        for para in str(text).split("\n"):
            lines.extend(textwrap.wrap(para, width=width) or [""])
        line_h = size * 1.45 / 72.0 / _PAGE[1]
        for line in lines:
            self.need(line_h)
            self.fig.text(_LEFT, self.y, line, fontsize=size, weight=weight, color=colour, va="top")
            self.y -= line_h
        self.y -= line_h * 0.4


def _write_pdf_matplotlib(doc: Doc, base: Path, pdf_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    colours = {"borderline": "#b00020", "high": "#1b6e1b", "moderate": "#8a6d00", "notice": "#b35900",
               "phi": "#b00020"}
    with plt.rc_context({"pdf.fonttype": 42}):  # TrueType: text stays extractable (pdftotext, search)
        with atomic_path(pdf_path, suffix=".pdf") as tmp:
            with PdfPages(tmp) as pdf:
                pg = _Pager(pdf, doc.title)
                pg.new()
                for block in doc.blocks:
                    kind = block[0]
                    if kind == "h1":
                        pg.text(block[1], size=15, weight="bold")
                    elif kind in ("h2", "h3"):
                        pg.need(0.08)
                        pg.y -= 0.008
                        pg.text(block[1], size=12, weight="bold", colour="#334455")
                    elif kind == "p":
                        cls = block[2]
                        pg.text(block[1], size=10 if cls in ("finding", "notice") else 9,
                                weight="bold" if cls in ("notice", "finding", "borderline") else "normal",
                                colour=colours.get(cls, "black"))
                    elif kind == "table":
                        _, header, rows = block
                        lines = []
                        if header:
                            lines.append(" | ".join(header))
                            lines.append("-" * min(110, len(lines[0])))
                        lines.extend((f"{r[0]}: {r[1]}" if not header and len(r) == 2 else " | ".join(r))
                                     for r in rows)
                        for line in lines:
                            pg.text(line, size=8, width=120)
                    elif kind == "img":
                        _, src, caption = block
                        path = base / src
                        if not path.is_file():
                            continue
                        arr = mpimg.imread(str(path))
                        h, w = arr.shape[:2]
                        width_frac = 0.86
                        height_frac = width_frac * _PAGE[0] / _PAGE[1] * h / w
                        if height_frac > 0.4:  # two key images fit on a page
                            width_frac *= 0.4 / height_frac
                            height_frac = 0.4
                        pg.need(height_frac + 0.03)
                        ax = pg.fig.add_axes((_LEFT, pg.y - height_frac, width_frac, height_frac))
                        ax.imshow(arr)
                        ax.axis("off")
                        pg.y -= height_frac + 0.01
                        if caption:
                            pg.text(caption, size=8, colour="#555")
                pg.flush()


def write_html(doc: Doc, path: str | Path) -> Path:
    return atomic_write_text(path, to_html(doc))
