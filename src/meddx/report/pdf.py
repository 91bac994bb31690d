"""The report PDF drawn with reportlab (pure pip, no system libraries) from the same `Doc` blocks the HTML
is written from, so both carry the same content in the same order: real tables, images with their captions
kept together on one page, headings kept with what follows, a running header and page numbers on A4."""

from __future__ import annotations

import io
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from meddx.utils import atomic_path

log = logging.getLogger(__name__)

_INK, _ACCENT, _GRID, _HEAD_BG, _MUTED = "#222222", "#334455", "#bbbbbb", "#eef2f6", "#555555"
_CLASS_COLOURS = {"high": "#1b6e1b", "moderate": "#8a6d00", "borderline": "#b00020"}
_MARGIN_CM = 1.5
_MAX_IMAGE_CM = (12.0, 6.0)  # width, height: a key image plus all tables fit on one A4 page


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, str]:
    """(regular, bold) font names: DejaVu Sans (the HTML's font, full Unicode: ≥, ², ×) from matplotlib's
    bundled TTFs when found, else the built-in Helvetica."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    try:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("MeddxSans", str(ttf / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("MeddxSans-Bold", str(ttf / "DejaVuSans-Bold.ttf")))
        from reportlab.lib.fonts import addMapping

        addMapping("MeddxSans", 0, 0, "MeddxSans")
        addMapping("MeddxSans", 1, 0, "MeddxSans-Bold")
        addMapping("MeddxSans", 0, 1, "MeddxSans")
        addMapping("MeddxSans", 1, 1, "MeddxSans-Bold")
        return "MeddxSans", "MeddxSans-Bold"
    except Exception as exc:  # noqa: BLE001 - any font problem falls back to a built-in font
        log.debug("DejaVu Sans unavailable for the PDF (%s); using Helvetica", exc)
        return "Helvetica", "Helvetica-Bold"


def _styles() -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    reg, bold = _fonts()
    base = ParagraphStyle("body", fontName=reg, fontSize=8.5, leading=10.5, textColor=colors.HexColor(_INK),
                          spaceAfter=3)
    s = {"p": base,
         "h1": ParagraphStyle("h1", base, fontName=bold, fontSize=14, leading=17, spaceAfter=4,
                              borderPadding=(0, 0, 2, 0), keepWithNext=1),
         "h2": ParagraphStyle("h2", base, fontName=bold, fontSize=10.5, leading=13, spaceBefore=4, spaceAfter=2,
                              textColor=colors.HexColor(_ACCENT), keepWithNext=1),
         "notice": ParagraphStyle("notice", base, fontName=bold, backColor=colors.HexColor("#fff4e5"),
                                  borderColor=colors.HexColor("#b35900"), borderWidth=1.2, borderPadding=4,
                                  spaceBefore=4, spaceAfter=7),
         "ood": ParagraphStyle("ood", base, fontName=bold, fontSize=10, leading=12.5,
                                  textColor=colors.HexColor("#b00020"), backColor=colors.HexColor("#fde8ea"),
                                  borderColor=colors.HexColor("#b00020"), borderWidth=1.5, borderPadding=5,
                                  spaceBefore=4, spaceAfter=8),
         "finding": ParagraphStyle("finding", base, fontName=bold, fontSize=10.5, leading=13),
         "phi": ParagraphStyle("phi", base, borderColor=colors.HexColor("#b00020"), borderWidth=1.2,
                               borderPadding=3, spaceBefore=3, spaceAfter=6),
         "small": ParagraphStyle("small", base, fontSize=7.5, leading=9, textColor=colors.HexColor(_MUTED)),
         "caption": ParagraphStyle("caption", base, fontSize=7.5, leading=9, textColor=colors.HexColor(_MUTED),
                                   spaceBefore=1, spaceAfter=5),
         "cell": ParagraphStyle("cell", base, fontSize=8, leading=9.5, spaceAfter=0),
         "cellhead": ParagraphStyle("cellhead", base, fontName=bold, fontSize=8, leading=9.5, spaceAfter=0)}
    for cls, colour in _CLASS_COLOURS.items():
        s[cls] = ParagraphStyle(cls, base, textColor=colors.HexColor(colour),
                                fontName=bold if cls == "borderline" else reg)
    return s


def _para(text: Any, style: Any) -> Any:
    from reportlab.platypus import Paragraph

    return Paragraph(escape(str(text)).replace("\n", "<br/>"), style)


def _table(header: list[str] | None, rows: list[list[str]], st: dict[str, Any], width: float) -> Any:
    """A ruled table like the HTML's: a shaded header row, or a key/value table with shaded keys."""
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    key_value = not header and all(len(r) == 2 for r in rows)
    if key_value and len(rows) > 4:
        return _table_two_pairs(rows, st, width)
    data = []
    if header:
        data.append([_para(h, st["cellhead"]) for h in header])
    for r in rows:
        data.append([_para(c, st["cellhead"] if key_value and j == 0 else st["cell"]) for j, c in enumerate(r)])
    if not data:
        return None
    n_cols = max(len(r) for r in data)
    data = [r + [""] * (n_cols - len(r)) for r in data]
    col_widths = _column_widths(header, rows, n_cols, width, key_value)
    t = Table(data, colWidths=col_widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor(_GRID)), ("VALIGN", (0, 0), (-1, -1), "TOP"),
             ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
             ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_HEAD_BG)))
    if key_value:
        style.append(("BACKGROUND", (0, 0), (0, -1), colors.HexColor(_HEAD_BG)))
    t.setStyle(TableStyle(style))
    t.spaceAfter = 4
    return t


def _table_two_pairs(rows: list[list[str]], st: dict[str, Any], width: float) -> Any:
    """A long key/value table of short values printed as two key/value column pairs (half the height, same
    order: down the left pair, then down the right); a value too long to share the width gets a full row."""
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    short = [r for r in rows if len(str(r[1])) <= 40]
    long = [r for r in rows if len(str(r[1])) > 40]
    half = (len(short) + 1) // 2
    left, right = short[:half], short[half:] + [["", ""]] * (2 * half - len(short))
    data = [[_para(a[0], st["cellhead"]), _para(a[1], st["cell"]), _para(b[0], st["cellhead"]),
             _para(b[1], st["cell"])] for a, b in zip(left, right)]
    data += [[_para(r[0], st["cellhead"]), _para(r[1], st["cell"]), "", ""] for r in long]
    kw = _column_widths(None, short or rows, 2, width / 2, True)
    t = Table(data, colWidths=kw + kw, hAlign="LEFT")
    style = [("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor(_GRID)), ("VALIGN", (0, 0), (-1, -1), "TOP"),
             ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
             ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
             ("BACKGROUND", (0, 0), (0, -1), colors.HexColor(_HEAD_BG)),
             ("BACKGROUND", (2, 0), (2, half - 1), colors.HexColor(_HEAD_BG))]
    style += [("SPAN", (1, i), (3, i)) for i in range(half, half + len(long))]
    t.setStyle(TableStyle(style))
    t.spaceAfter = 4
    return t


def _column_widths(header: list[str] | None, rows: list[list[str]], n_cols: int, width: float,
                   key_value: bool) -> list[float]:
    """Columns sized by their longest text (capped), scaled down to the frame width when too wide."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    reg, bold = _fonts()
    need = [0.0] * n_cols
    for i, r in enumerate(([header] if header else []) + list(rows)):
        for j, c in enumerate(r):
            font = bold if (header and i == 0) or (key_value and j == 0) else reg
            need[j] = max(need[j], stringWidth(str(c), font, 8) + 10)
    need = [min(max(n, 24.0), width * (0.45 if key_value and j == 0 else 0.8)) for j, n in enumerate(need)]
    total = sum(need)
    if total > width:
        need = [n * width / total for n in need]
    return need


def _load(path: Path) -> tuple[io.BytesIO, int, int]:
    """The PNG without its blank margins, as an in-memory PNG and its pixel size."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im = _trim_white(im.convert("RGB"))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    buf.seek(0)
    return buf, im.size[0], im.size[1]


def _picture(loaded: tuple[io.BytesIO, int, int], max_w: float, max_h: float) -> Any:
    """The image scaled to fit max_w x max_h points (at most 1.5x its 100-dpi size: no blown-up pixels)."""
    from reportlab.platypus import Image

    buf, w_px, h_px = loaded
    natural_w = w_px * 72.0 / 100.0 * 1.5
    scale = min(max_w / w_px, max_h / h_px, natural_w / w_px)
    return Image(buf, width=w_px * scale, height=h_px * scale, hAlign="LEFT")


def _figures(items: list[tuple[Path, str]], st: dict[str, Any], width: float) -> list[Any]:
    """Consecutive figures: upright or square ones (key images, key frames) side by side, up to 3 a row, each
    with its caption below; wide ones (charts, orthogonal views) on their own. Each row is kept together, so a
    page break never cuts an image or separates it from its caption."""
    from reportlab.lib.units import cm
    from reportlab.platypus import Table, TableStyle

    max_w, max_h = min(width, _MAX_IMAGE_CM[0] * cm), _MAX_IMAGE_CM[1] * cm
    out: list[Any] = []
    row: list[tuple[tuple[io.BytesIO, int, int], str]] = []

    def flush() -> None:
        if not row:
            return
        # one-row tables: never split by a page break, and (unlike KeepTogether) chained to a heading or
        # lead-in paragraph kept with them (keepWithNext)
        if len(row) == 1:
            loaded, caption = row[0]
            cell_w = max_w + 8
            cells = [[_picture(loaded, max_w, max_h)] + ([_para(caption, st["caption"])] if caption else [])]
        else:
            cell_w = width / len(row)
            cells = [[_picture(loaded, cell_w - 8, max_h)] + ([_para(caption, st["caption"])] if caption else [])
                     for loaded, caption in row]
        t = Table([cells], colWidths=[cell_w] * len(row), hAlign="LEFT")
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("RIGHTPADDING", (0, 0), (-1, -1), 8), ("TOPPADDING", (0, 0), (-1, -1), 0),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 0)]))
        t.spaceAfter = 4
        out.append(t)
        row.clear()

    for path, caption in items:
        loaded = _load(path)
        if loaded[1] > 1.6 * loaded[2]:  # wide: full width, alone
            flush()
            row.append((loaded, caption))
            flush()
            continue
        row.append((loaded, caption))
        if len(row) == 3:
            flush()
    flush()
    return out


def _trim_white(im: Any, pad: int = 4) -> Any:
    """The image without the figure's blank white margins (more of the picture fits the same height)."""
    import numpy as np

    a = np.asarray(im)
    ink = (a < 245).any(axis=-1)
    if not ink.any():
        return im
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    top, bottom = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + pad + 1, a.shape[0])
    left, right = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + pad + 1, a.shape[1])
    return im.crop((left, top, right, bottom))


def write_pdf_reportlab(doc: Any, base: str | Path, pdf_path: str | Path) -> Path:
    """Write `doc` (report.document.Doc) as an A4 PDF; image blocks are read relative to `base`."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import SimpleDocTemplate

    base, pdf_path = Path(base), Path(pdf_path)
    st = _styles()
    reg, _ = _fonts()
    margin = _MARGIN_CM * cm
    width = A4[0] - 2 * margin
    story: list[Any] = []
    pending: list[tuple[Path, str]] = []
    for i, block in enumerate(doc.blocks):
        kind = block[0]
        if kind == "img":
            path = base / block[1]
            if path.is_file():
                pending.append((path, block[2]))
            else:
                log.warning("report image %s is missing; left out of the PDF", block[1])
            continue
        story.extend(_figures(pending, st, width))
        pending = []
        if kind in ("h1", "h2", "h3"):
            story.append(_para(block[1], st["h1" if kind == "h1" else "h2"]))
        elif kind == "p":
            style = st.get(block[2] or "p", st["p"])
            if i + 1 < len(doc.blocks) and doc.blocks[i + 1][0] == "img":  # a figure's lead-in stays with it
                style = ParagraphStyle(f"{style.name}-lead", style, keepWithNext=1)
            story.append(_para(block[1], style))
        elif kind == "table":
            t = _table(block[1], block[2], st, width)
            if t is not None:
                story.append(t)
    story.extend(_figures(pending, st, width))

    def decorate(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(reg, 7)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(margin, A4[1] - margin + 0.45 * cm, doc.title)
        canvas.drawRightString(A4[0] - margin, A4[1] - margin + 0.45 * cm, f"page {document.page}")
        canvas.setStrokeColor(colors.HexColor(_GRID))
        canvas.line(margin, A4[1] - margin + 0.35 * cm, A4[0] - margin, A4[1] - margin + 0.35 * cm)
        canvas.drawString(margin, margin - 0.6 * cm, "Decision support only; not a diagnosis.")
        canvas.restoreState()

    with atomic_path(pdf_path, suffix=".pdf") as tmp:
        pdf = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=margin,
                                bottomMargin=margin, title=doc.title, author="meddx", creator="meddx")
        pdf.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return pdf_path
