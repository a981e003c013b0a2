"""Render a report spec to one self-contained HTML file and an A4 PDF.

A spec is a JSON-serialisable dict::

    {
      "title": str, "subtitle": str (optional),
      "sections": [
        {"heading": str,
         "blocks": [
            {"type": "paragraph", "text": str},
            {"type": "bullets", "items": [str, ...]},
            {"type": "table", "caption": str, "columns": [str, ...],
             "rows": [[str | number | None, ...], ...], "note": str (optional)},
            {"type": "figure", "path": "path/to/file.png", "caption": str},
            {"type": "code", "text": str},
         ]}
      ]
    }

Tables and figures are numbered in document order ("Table 1: ...", "Figure 1: ...").
Table cells that are ``None`` are shown as an em dash; numbers are shown with ``str``
(format floats as strings beforehand to control their precision). Figure paths are
resolved against the current working directory; a missing figure raises
``FileNotFoundError`` before anything is written.

The HTML embeds figures as base64 data URIs and carries its own CSS. The PDF uses the
DejaVu fonts shipped with matplotlib (STIX as a fallback for rarer symbols), so Greek
letters and mathematical symbols render. Both outputs are deterministic: the same spec
and figure files give the same bytes. Each file is written to a temporary name in its
destination folder and then moved into place.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Number
from pathlib import Path
from typing import Any

__all__ = ["render_report"]

# Fixed PDF creation date, so that identical specs give identical PDF bytes.
PDF_CREATION_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)

_BLOCK_TYPES = ("paragraph", "bullets", "table", "figure", "code")
_MISSING_CELL = "\u2014"

# PDF geometry, in millimetres.
_MARGIN = 15.0
_BOTTOM_MARGIN = 18.0
_FOOTER_Y = -11.0
_BODY_PT = 10.0
_BODY_LH = 5.0
_CAPTION_PT = 9.0
_CAPTION_LH = 4.4
_CODE_PT = 8.0
_CODE_LH = 3.8
_TABLE_SIZES_PT = (9.0, 8.5, 8.0, 7.5, 7.0, 6.5, 6.0)
_TABLE_PAD = 1.0
_TOC_PAGE_W = 14.0

_TEXT_FONT = "dejavu"
_MONO_FONT = "dejavumono"
_FALLBACK_FONT = "stix"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class _Table:
    number: int
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    note: str

    @property
    def label(self) -> str:
        return f"Table {self.number}: {self.caption}" if self.caption else f"Table {self.number}"


@dataclass(frozen=True)
class _Figure:
    number: int
    caption: str
    path: Path
    data: bytes = field(repr=False)
    mime: str
    width_px: int
    height_px: int

    @property
    def label(self) -> str:
        return f"Figure {self.number}: {self.caption}" if self.caption else f"Figure {self.number}"


@dataclass(frozen=True)
class _Code:
    text: str


_Block = _Paragraph | _Bullets | _Table | _Figure | _Code


@dataclass(frozen=True)
class _Section:
    number: int
    heading: str
    blocks: tuple[_Block, ...]

    @property
    def label(self) -> str:
        return f"{self.number}. {self.heading}"


@dataclass(frozen=True)
class _Document:
    title: str
    subtitle: str
    sections: tuple[_Section, ...]


# ---------------------------------------------------------------------- validation


def _require_str(value: Any, where: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__}")
    return value


def _require_list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where} must be a list, got {type(value).__name__}")
    return list(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _cell_text(value: Any, where: str) -> str:
    if value is None:
        return _MISSING_CELL
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, Number)):
        return str(value)
    raise TypeError(f"{where} must be a string, a number or None, got {type(value).__name__}")


def _load_figure(path_value: Any, where: str) -> tuple[Path, bytes, str, int, int]:
    from PIL import Image, UnidentifiedImageError

    path = Path(_require_str(path_value, f"{where}.path"))
    if not path.is_file():
        raise FileNotFoundError(2, f"{where}: figure file not found", str(path))
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            width, height = image.size
    except UnidentifiedImageError as exc:
        raise ValueError(f"{where}: {path} is not a readable raster image") from exc
    mime = Image.MIME.get(fmt or "", "")
    if not mime or width <= 0 or height <= 0:
        raise ValueError(f"{where}: {path} is not a usable image (format {fmt!r})")
    return path, data, mime, width, height


def _parse_table(block: dict, where: str, number: int) -> _Table:
    columns = tuple(
        _require_str(c, f"{where}.columns[{i}]")
        for i, c in enumerate(_require_list(block.get("columns"), f"{where}.columns"))
    )
    if not columns:
        raise ValueError(f"{where}.columns must not be empty")
    raw_rows = _require_list(block.get("rows", []), f"{where}.rows")
    rows = []
    numeric = [True] * len(columns)
    seen_value = [False] * len(columns)
    for r, raw in enumerate(raw_rows):
        cells = _require_list(raw, f"{where}.rows[{r}]")
        if len(cells) != len(columns):
            raise ValueError(
                f"{where}.rows[{r}] has {len(cells)} cells but the table has {len(columns)} columns"
            )
        for c, value in enumerate(cells):
            if value is not None:
                seen_value[c] = True
                numeric[c] = numeric[c] and _is_number(value)
        rows.append(tuple(_cell_text(v, f"{where}.rows[{r}][{c}]") for c, v in enumerate(cells)))
    return _Table(
        number=number,
        caption=_require_str(block.get("caption"), f"{where}.caption", optional=True),
        columns=columns,
        rows=tuple(rows),
        numeric=tuple(n and s for n, s in zip(numeric, seen_value)),
        note=_require_str(block.get("note"), f"{where}.note", optional=True),
    )


def _parse_spec(spec: Any) -> _Document:
    if not isinstance(spec, dict):
        raise TypeError(f"report spec must be a dict, got {type(spec).__name__}")
    title = _require_str(spec.get("title"), "title")
    subtitle = _require_str(spec.get("subtitle"), "subtitle", optional=True)
    sections = []
    n_tables = n_figures = 0
    for s, raw_section in enumerate(_require_list(spec.get("sections", []), "sections")):
        where_s = f"sections[{s}]"
        if not isinstance(raw_section, dict):
            raise TypeError(f"{where_s} must be a dict")
        heading = _require_str(raw_section.get("heading"), f"{where_s}.heading")
        blocks: list[_Block] = []
        for b, block in enumerate(_require_list(raw_section.get("blocks", []), f"{where_s}.blocks")):
            where = f"{where_s}.blocks[{b}]"
            if not isinstance(block, dict):
                raise TypeError(f"{where} must be a dict")
            kind = block.get("type")
            if kind == "paragraph":
                blocks.append(_Paragraph(_require_str(block.get("text"), f"{where}.text")))
            elif kind == "bullets":
                items = _require_list(block.get("items"), f"{where}.items")
                blocks.append(
                    _Bullets(tuple(_require_str(x, f"{where}.items[{i}]") for i, x in enumerate(items)))
                )
            elif kind == "table":
                n_tables += 1
                blocks.append(_parse_table(block, where, n_tables))
            elif kind == "figure":
                n_figures += 1
                path, data, mime, width, height = _load_figure(block.get("path"), where)
                blocks.append(
                    _Figure(
                        number=n_figures,
                        caption=_require_str(block.get("caption"), f"{where}.caption", optional=True),
                        path=path,
                        data=data,
                        mime=mime,
                        width_px=width,
                        height_px=height,
                    )
                )
            elif kind == "code":
                blocks.append(_Code(_require_str(block.get("text"), f"{where}.text")))
            else:
                raise ValueError(f"{where}.type is {kind!r}; expected one of {', '.join(_BLOCK_TYPES)}")
        sections.append(_Section(number=s + 1, heading=heading, blocks=tuple(blocks)))
    return _Document(title=title, subtitle=subtitle, sections=tuple(sections))


# ---------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body {
  margin: 0; background: #f4f5f7; color: #1d2330;
  font-family: "DejaVu Sans", "Segoe UI", "Helvetica Neue", Arial, sans-serif;
  font-size: 16px; line-height: 1.6;
}
main {
  max-width: 60rem; margin: 2rem auto; padding: 2.5rem 3rem;
  background: #fff; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.08);
}
header h1 { font-size: 2rem; line-height: 1.25; margin: 0 0 0.4rem; }
header .subtitle { font-size: 1.15rem; color: #505a6b; margin: 0; }
header { border-bottom: 2px solid #2c4a7a; padding-bottom: 1rem; margin-bottom: 1.5rem; }
nav.toc { background: #f7f9fc; border: 1px solid #dde3ec; padding: 0.8rem 1.5rem; margin-bottom: 2rem; }
nav.toc h2 { font-size: 1.1rem; margin: 0 0 0.4rem; }
nav.toc ol { margin: 0; padding-left: 1.5rem; }
nav.toc a { color: #2c4a7a; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
section { margin-top: 2.2rem; }
section > h2 { font-size: 1.45rem; color: #2c4a7a; border-bottom: 1px solid #dde3ec; padding-bottom: 0.2rem; }
p.text { white-space: pre-line; }
ul.bullets li { margin: 0.2rem 0; }
.table-wrap { overflow-x: auto; margin: 1.2rem 0; }
table { border-collapse: collapse; font-size: 0.88rem; min-width: 50%; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.4rem; color: #333b48; }
th, td { border: 1px solid #c6cdd8; padding: 0.3rem 0.55rem; vertical-align: top; }
thead th { background: #dce2eb; text-align: left; }
tbody tr:nth-child(even) { background: #f4f6f9; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: 0.85rem; color: #505a6b; margin: 0.3rem 0 0; }
figure.figure { margin: 1.5rem 0; text-align: center; }
figure.figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ee; }
figure.figure figcaption { font-style: italic; color: #333b48; margin-top: 0.4rem; }
pre.code {
  background: #f5f6f8; border: 1px solid #dde3ec; padding: 0.8rem 1rem;
  font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.82rem;
  line-height: 1.45; white-space: pre-wrap; overflow-wrap: anywhere;
}
@media print {
  body { background: #fff; }
  main { box-shadow: none; margin: 0; max-width: none; }
  figure.figure, .table-wrap { break-inside: avoid; }
}
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_block(block: _Block) -> list[str]:
    if isinstance(block, _Paragraph):
        return [f'<p class="text">{_e(block.text)}</p>']
    if isinstance(block, _Bullets):
        return ['<ul class="bullets">', *(f"<li>{_e(item)}</li>" for item in block.items), "</ul>"]
    if isinstance(block, _Code):
        return [f'<pre class="code"><code>{_e(block.text)}</code></pre>']
    if isinstance(block, _Figure):
        encoded = base64.b64encode(block.data).decode("ascii")
        return [
            f'<figure class="figure" id="figure-{block.number}">',
            f'<img src="data:{block.mime};base64,{encoded}" alt="{_e(block.caption or block.label)}"'
            f' width="{block.width_px}" height="{block.height_px}">',
            f"<figcaption>{_e(block.label)}</figcaption>",
            "</figure>",
        ]
    assert isinstance(block, _Table)
    num_cls = [' class="num"' if n else "" for n in block.numeric]
    out = [
        f'<div class="table-wrap" id="table-{block.number}">',
        "<table>",
        f"<caption>{_e(block.label)}</caption>",
        "<thead><tr>" + "".join(f"<th{k}>{_e(c)}</th>" for k, c in zip(num_cls, block.columns)) + "</tr></thead>",
        "<tbody>",
    ]
    for row in block.rows:
        out.append("<tr>" + "".join(f"<td{k}>{_e(v)}</td>" for k, v in zip(num_cls, row)) + "</tr>")
    out.append("</tbody>")
    out.append("</table>")
    if block.note:
        out.append(f'<p class="note">{_e(block.note)}</p>')
    out.append("</div>")
    return out


def _render_html(doc: _Document) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>{_e(doc.title)}</h1>",
    ]
    if doc.subtitle:
        out.append(f'<p class="subtitle">{_e(doc.subtitle)}</p>')
    out.append("</header>")
    if doc.sections:
        out.append('<nav class="toc" aria-label="Contents">')
        out.append("<h2>Contents</h2>")
        out.append("<ol>")
        for section in doc.sections:
            out.append(f'<li><a href="#section-{section.number}">{_e(section.heading)}</a></li>')
        out.append("</ol>")
        out.append("</nav>")
    for section in doc.sections:
        out.append(f'<section id="section-{section.number}">')
        out.append(f"<h2>{_e(section.label)}</h2>")
        for block in section.blocks:
            out.extend(_html_block(block))
        out.append("</section>")
    out.extend(["</main>", "</body>", "</html>", ""])
    return "\n".join(out)


# ----------------------------------------------------------------------------- PDF


def _font_files() -> dict[tuple[str, str], Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = {
        (_TEXT_FONT, ""): ttf / "DejaVuSans.ttf",
        (_TEXT_FONT, "B"): ttf / "DejaVuSans-Bold.ttf",
        (_TEXT_FONT, "I"): ttf / "DejaVuSans-Oblique.ttf",
        (_TEXT_FONT, "BI"): ttf / "DejaVuSans-BoldOblique.ttf",
        (_MONO_FONT, ""): ttf / "DejaVuSansMono.ttf",
        (_FALLBACK_FONT, ""): ttf / "STIXGeneral.ttf",
    }
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(2, "font file shipped with matplotlib not found", str(path))
    return files


def _new_pdf(doc: _Document):
    from fpdf import FPDF

    class _ReportPDF(FPDF):
        def footer(self) -> None:
            self.set_y(_FOOTER_Y)
            self.set_font(_TEXT_FONT, "", 8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 5, f"Page {self.page_no()} of {self.str_alias_nb_pages}", align="C")
            self.set_text_color(0, 0, 0)

    pdf = _ReportPDF(orientation="P", unit="mm", format="A4")
    for (family, style), path in _font_files().items():
        pdf.add_font(family, style, str(path))
    pdf.set_fallback_fonts([_FALLBACK_FONT], exact_match=False)
    pdf.alias_nb_pages("{seqedit-report-nb}")
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=_BOTTOM_MARGIN)
    pdf.set_creation_date(PDF_CREATION_DATE)
    pdf.set_title(doc.title)
    if doc.subtitle:
        pdf.set_subject(doc.subtitle)
    pdf.set_creator("seqedit report renderer")
    pdf.set_lang("en")
    return pdf


def _space_left(pdf) -> float:
    return pdf.page_break_trigger - pdf.y


def _ensure_space(pdf, height: float) -> None:
    """Start a new page unless `height` mm fit below the cursor (never on a fresh page)."""
    if height > _space_left(pdf) and pdf.y > pdf.t_margin + 1e-6:
        pdf.add_page()


def _text_height(pdf, width: float, line_height: float, text: str) -> float:
    lines = pdf.multi_cell(width, line_height, text, dry_run=True, output="LINES")
    return max(1, len(lines)) * line_height


def _pdf_title_and_toc(pdf, doc: _Document, toc_pages: list[int] | None, links: list[int]) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font(_TEXT_FONT, "B", 20)
    pdf.multi_cell(0, 9, doc.title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if doc.subtitle:
        pdf.ln(1)
        pdf.set_font(_TEXT_FONT, "", 12)
        pdf.set_text_color(80, 90, 107)
        pdf.multi_cell(0, 6, doc.subtitle, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
    pdf.ln(2)
    pdf.set_draw_color(44, 74, 122)
    pdf.set_line_width(0.6)
    pdf.line(pdf.l_margin, pdf.y, pdf.l_margin + pdf.epw, pdf.y)
    pdf.set_line_width(0.2)
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(5)
    if not doc.sections:
        return
    pdf.set_font(_TEXT_FONT, "B", 13)
    pdf.cell(0, 7, "Contents", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    pdf.set_font(_TEXT_FONT, "", _BODY_PT)
    text_w = pdf.epw - _TOC_PAGE_W
    for section, link in zip(doc.sections, links):
        height = _text_height(pdf, text_w, _BODY_LH, section.label)
        _ensure_space(pdf, height)
        y = pdf.y
        pdf.multi_cell(text_w, _BODY_LH, section.label, align="L", link=link, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        page_text = str(toc_pages[section.number - 1]) if toc_pages else ""
        pdf.set_xy(pdf.l_margin + text_w, y)
        pdf.cell(_TOC_PAGE_W, _BODY_LH, page_text, align="R", link=link)
        pdf.set_xy(pdf.l_margin, y + height + 0.8)
    pdf.ln(6)


def _lead_height(pdf, block: _Block) -> float:
    """Height of the start of `block` that should share a page with the heading above it."""
    if isinstance(block, _Figure):
        _, height, caption_h = _figure_geometry(pdf, block)
        return height + _FIGURE_GAP + caption_h
    if isinstance(block, _Table):
        return _table_lead_height(pdf, block)
    if isinstance(block, _Code):
        return 3 * _CODE_LH + 3
    return 3 * _BODY_LH


def _pdf_heading(pdf, section: _Section, link: int) -> int:
    from fpdf.enums import XPos, YPos

    lead = _lead_height(pdf, section.blocks[0]) if section.blocks else 0.0
    pdf.set_font(_TEXT_FONT, "B", 14)
    height = _text_height(pdf, pdf.epw, 7, section.label)
    # Keep the heading on the same page as the start of the section's first block.
    _ensure_space(pdf, 4 + height + 4 + lead)
    if pdf.y > pdf.t_margin + 1e-6:
        pdf.ln(4)
    pdf.start_section(section.label)
    pdf.set_link(link, y=pdf.y, page=pdf.page)
    page = pdf.page
    pdf.set_text_color(44, 74, 122)
    pdf.multi_cell(0, 7, section.label, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(200, 207, 218)
    pdf.line(pdf.l_margin, pdf.y + 0.5, pdf.l_margin + pdf.epw, pdf.y + 0.5)
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(3)
    return page


def _pdf_paragraph(pdf, block: _Paragraph) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font(_TEXT_FONT, "", _BODY_PT)
    pdf.multi_cell(0, _BODY_LH, block.text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2.5)


def _pdf_bullets(pdf, block: _Bullets) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font(_TEXT_FONT, "", _BODY_PT)
    indent, gap = 3.0, 4.0
    text_w = pdf.epw - indent - gap
    for item in block.items:
        _ensure_space(pdf, _BODY_LH)
        pdf.set_x(pdf.l_margin + indent)
        pdf.cell(gap, _BODY_LH, "\u2022")
        pdf.multi_cell(text_w, _BODY_LH, item, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(0.8)
    pdf.ln(1.7)


def _pdf_code(pdf, block: _Code) -> None:
    from fpdf.enums import WrapMode, XPos, YPos

    text = block.text.expandtabs(4).rstrip("\n")
    pdf.set_font(_MONO_FONT, "", _CODE_PT)
    pdf.set_fill_color(245, 246, 248)
    _ensure_space(pdf, 2 * _CODE_LH + 3)
    pdf.multi_cell(
        0,
        _CODE_LH,
        text,
        align="L",
        fill=True,
        wrapmode=WrapMode.CHAR,
        padding=(1.5, 2.0),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(3)


def _pdf_caption(pdf, label: str, align: str) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font(_TEXT_FONT, "I", _CAPTION_PT)
    pdf.set_text_color(51, 59, 72)
    pdf.multi_cell(0, _CAPTION_LH, label, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)


_FIGURE_GAP = 2.0


def _figure_geometry(pdf, block: _Figure) -> tuple[float, float, float]:
    """Width and height of the scaled image and height of its caption, in mm.

    The image fills the text width unless that would make image plus caption taller
    than a page, in which case it is scaled down, keeping its aspect ratio.
    """
    pdf.set_font(_TEXT_FONT, "I", _CAPTION_PT)
    caption_h = _text_height(pdf, pdf.epw, _CAPTION_LH, block.label)
    aspect = block.height_px / block.width_px
    max_h = pdf.eph - caption_h - _FIGURE_GAP - 1.0
    width = pdf.epw
    height = width * aspect
    if height > max_h:
        height = max_h
        width = height / aspect
    return width, height, caption_h


def _pdf_figure(pdf, block: _Figure) -> None:
    width, height, caption_h = _figure_geometry(pdf, block)
    _ensure_space(pdf, height + _FIGURE_GAP + caption_h)
    x = pdf.l_margin + (pdf.epw - width) / 2
    y = pdf.y
    pdf.image(io.BytesIO(block.data), x=x, y=y, w=width, h=height)
    pdf.set_xy(pdf.l_margin, y + height + _FIGURE_GAP)
    _pdf_caption(pdf, block.label, "C")
    pdf.ln(4)


def _water_fill(widths: list[float], total: float) -> list[float]:
    """Clip `widths` at the level that makes them sum to `total` (`sum(widths) >= total`)."""
    rest = sorted(widths)
    remaining = total
    for i, w in enumerate(rest):
        level = remaining / (len(rest) - i)
        if w >= level:
            return [min(x, level) for x in widths]
        remaining -= w
    return list(widths)


def _fit_table(pdf, block: _Table) -> tuple[float, list[float]]:
    """Pick the largest font size at which the columns fit the text width, and the widths."""

    def measure(size: float) -> tuple[list[float], list[float]]:
        natural = [0.0] * len(block.columns)
        word = [0.0] * len(block.columns)
        # Words wider than the cap are broken inside; column names get a larger cap.
        body_cap = max(pdf.epw / len(block.columns), 15.0)
        head_cap = max(pdf.epw / 4, body_cap)
        for style, cap, rows in (("B", head_cap, (block.columns,)), ("", body_cap, block.rows)):
            pdf.set_font(_TEXT_FONT, style, size)
            for row in rows:
                for c, text in enumerate(row):
                    for line in text.split("\n"):
                        natural[c] = max(natural[c], pdf.get_string_width(line))
                        for token in line.split():
                            word[c] = max(word[c], min(cap, pdf.get_string_width(token)))
        pad = 2 * _TABLE_PAD + 0.6
        return [n + pad for n in natural], [max(w + pad, 6.0) for w in word]

    for size in _TABLE_SIZES_PT:
        natural, word = measure(size)
        if sum(word) <= pdf.epw:
            break
    if sum(natural) <= pdf.epw:
        return size, natural
    if sum(word) >= pdf.epw:
        # Even the smallest size overflows: narrow the widest columns to a common width.
        return size, _water_fill(word, pdf.epw)
    spare = pdf.epw - sum(word)
    growth = [n - w for n, w in zip(natural, word)]
    total_growth = sum(growth)
    return size, [w + spare * g / total_growth for w, g in zip(word, growth)]


def _table_line_height(size_pt: float) -> float:
    return size_pt * 0.3528 * 1.2


def _table_lead_height(pdf, block: _Table) -> float:
    """Height of the caption, the header row and the first rows of a table (estimate)."""
    size, _ = _fit_table(pdf, block)
    pdf.set_font(_TEXT_FONT, "I", _CAPTION_PT)
    caption_h = _text_height(pdf, pdf.epw, _CAPTION_LH, block.label)
    rows = 1 + min(3, len(block.rows))
    return caption_h + 1.5 + rows * (2 * _table_line_height(size) + 2 * _TABLE_PAD)


def _pdf_table(pdf, block: _Table) -> None:
    from fpdf.enums import TableCellFillMode, WrapMode
    from fpdf.fonts import FontFace

    size, widths = _fit_table(pdf, block)
    line_h = _table_line_height(size)
    # Keep the caption on the same page as the header row and the first rows.
    _ensure_space(pdf, _table_lead_height(pdf, block))
    _pdf_caption(pdf, block.label, "L")
    pdf.ln(1.5)
    pdf.set_font(_TEXT_FONT, "", size)
    pdf.set_draw_color(160, 170, 185)
    pdf.set_line_width(0.2)
    with pdf.table(
        width=min(sum(widths), pdf.epw),
        col_widths=tuple(widths),
        align="LEFT",
        text_align=tuple("RIGHT" if n else "LEFT" for n in block.numeric),
        v_align="TOP",
        line_height=line_h,
        padding=_TABLE_PAD,
        headings_style=FontFace(emphasis="BOLD", fill_color=(220, 226, 235)),
        cell_fill_color=(244, 246, 249),
        cell_fill_mode=TableCellFillMode.ROWS,
        repeat_headings=1,
        wrapmode=WrapMode.WORD,
        first_row_as_headings=True,
    ) as table:
        for row in (block.columns, *block.rows):
            cells = table.row()
            for text in row:
                cells.cell(text)
    pdf.set_draw_color(0, 0, 0)
    if block.note:
        from fpdf.enums import XPos, YPos

        pdf.ln(1)
        pdf.set_font(_TEXT_FONT, "I", 8)
        pdf.set_text_color(80, 90, 107)
        pdf.multi_cell(0, 3.8, block.note, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
    pdf.ln(4)


def _layout_pdf(doc: _Document, toc_pages: list[int] | None):
    pdf = _new_pdf(doc)
    pdf.add_page()
    # Each link is pointed at its section once the section is laid out.
    links = [pdf.add_link(page=1) for _ in doc.sections]
    _pdf_title_and_toc(pdf, doc, toc_pages, links)
    section_pages = []
    for section, link in zip(doc.sections, links):
        section_pages.append(_pdf_heading(pdf, section, link))
        for block in section.blocks:
            if isinstance(block, _Paragraph):
                _pdf_paragraph(pdf, block)
            elif isinstance(block, _Bullets):
                _pdf_bullets(pdf, block)
            elif isinstance(block, _Table):
                _pdf_table(pdf, block)
            elif isinstance(block, _Figure):
                _pdf_figure(pdf, block)
            else:
                _pdf_code(pdf, block)
    return pdf, section_pages


def _render_pdf(doc: _Document) -> bytes:
    # The contents list shows each section's page, which is known only after layout;
    # the page column has a fixed width, so a second pass reproduces the same layout.
    pdf, pages = _layout_pdf(doc, None)
    if doc.sections:
        for _ in range(3):
            pdf, new_pages = _layout_pdf(doc, pages)
            if new_pages == pages:
                break
            pages = new_pages
    return bytes(pdf.output())


# --------------------------------------------------------------------------- output


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def render_report(spec: dict, html_path: str | os.PathLike, pdf_path: str | os.PathLike) -> None:
    """Render `spec` to a self-contained HTML file at `html_path` and a PDF at `pdf_path`.

    Raises FileNotFoundError (naming the path) for a missing figure file, TypeError or
    ValueError for a malformed spec; in those cases neither output is written.
    """
    doc = _parse_spec(spec)
    html_bytes = _render_html(doc).encode("utf-8")
    pdf_bytes = _render_pdf(doc)
    _write_atomic(Path(html_path), html_bytes)
    _write_atomic(Path(pdf_path), pdf_bytes)
