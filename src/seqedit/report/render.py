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

The HTML comes from the Jinja2 template ``templates/report.html.j2`` (autoescaped, CSS
inside, figures as base64 data URIs). The PDF is laid out once with fpdf2: sections
are outline entries (``start_section``) and the contents page is fpdf2's table-of-contents
placeholder, filled in when the document is closed; tables use fpdf2's ``table()``. Text
uses the DejaVu fonts shipped with matplotlib (STIX as a fallback for rarer symbols), so
Greek letters and mathematical symbols render. Both outputs are deterministic: the same
spec and figure files give the same bytes. Each file is written to a temporary name in
its destination folder and then moved into place.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
from datetime import datetime, timezone
from numbers import Number
from pathlib import Path
from typing import Any

__all__ = ["render_report"]

# Fixed PDF creation date, so that identical specs give identical PDF bytes.
PDF_CREATION_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)

_BLOCK_TYPES = ("paragraph", "bullets", "table", "figure", "code")
_MISSING_CELL = "\u2014"

# PDF geometry (mm) and type sizes (pt).
_MARGIN, _BOTTOM_MARGIN = 15.0, 18.0
_BODY_PT, _BODY_LH = 10.0, 5.0
_CAPTION_PT, _CAPTION_LH = 9.0, 4.4
_CODE_PT, _CODE_LH = 8.0, 3.8
_TABLE_SIZES_PT = (9.0, 8.0, 7.0, 6.0)
_TABLE_PAD = 1.0
_TOC_PAGE_W = 14.0
_FIGURE_GAP = 2.0
_TEXT, _MONO, _FALLBACK = "dejavu", "dejavumono", "stix"
_ACCENT = (44, 74, 122)


# ---------------------------------------------------------------------- validation


def _str(value: Any, where: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where} must be a list, got {type(value).__name__}")
    return list(value)


def _cell(value: Any, where: str) -> str:
    if value is None:
        return _MISSING_CELL
    if isinstance(value, (str, bool, Number)):
        return str(value)
    raise TypeError(f"{where} must be a string, a number or None, got {type(value).__name__}")


def _label(kind: str, number: int, caption: str) -> str:
    return f"{kind} {number}: {caption}" if caption else f"{kind} {number}"


def _table(block: dict, where: str, number: int) -> dict:
    columns = [_str(c, f"{where}.columns[{i}]") for i, c in enumerate(_list(block.get("columns"), f"{where}.columns"))]
    if not columns:
        raise ValueError(f"{where}.columns must not be empty")
    raw_rows = [_list(r, f"{where}.rows[{i}]") for i, r in enumerate(_list(block.get("rows", []), f"{where}.rows"))]
    for r, cells in enumerate(raw_rows):
        if len(cells) != len(columns):
            raise ValueError(f"{where}.rows[{r}] has {len(cells)} cells but the table has {len(columns)} columns")
    rows = [[_cell(v, f"{where}.rows[{r}][{c}]") for c, v in enumerate(cells)] for r, cells in enumerate(raw_rows)]
    # A column is numeric (right-aligned) when it holds a value and every value is a number.
    numeric = []
    for c in range(len(columns)):
        values = [cells[c] for cells in raw_rows if cells[c] is not None]
        numeric.append(bool(values) and all(isinstance(v, Number) and not isinstance(v, bool) for v in values))
    caption = _str(block.get("caption"), f"{where}.caption", optional=True)
    return {"type": "table", "number": number, "label": _label("Table", number, caption), "columns": columns,
            "rows": rows, "numeric": numeric, "note": _str(block.get("note"), f"{where}.note", optional=True)}


def _figure(block: dict, where: str, number: int) -> dict:
    from PIL import Image, UnidentifiedImageError

    path = Path(_str(block.get("path"), f"{where}.path"))
    if not path.is_file():
        raise FileNotFoundError(2, f"{where}: figure file not found", str(path))
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except UnidentifiedImageError as exc:
        raise ValueError(f"{where}: {path} is not a readable raster image") from exc
    mime = Image.MIME.get(fmt or "", "")
    if not mime or width <= 0 or height <= 0:
        raise ValueError(f"{where}: {path} is not a usable image (format {fmt!r})")
    caption = _str(block.get("caption"), f"{where}.caption", optional=True)
    return {"type": "figure", "number": number, "caption": caption, "label": _label("Figure", number, caption),
            "data": data, "base64": base64.b64encode(data).decode("ascii"), "mime": mime,
            "width": width, "height": height}


def _parse_spec(spec: Any) -> dict:
    """Check the spec and return it normalised: cells as text, tables and figures numbered and labelled."""
    if not isinstance(spec, dict):
        raise TypeError(f"report spec must be a dict, got {type(spec).__name__}")
    counts = {"table": 0, "figure": 0}
    sections = []
    for s, raw in enumerate(_list(spec.get("sections", []), "sections")):
        if not isinstance(raw, dict):
            raise TypeError(f"sections[{s}] must be a dict")
        heading = _str(raw.get("heading"), f"sections[{s}].heading")
        blocks = []
        for b, block in enumerate(_list(raw.get("blocks", []), f"sections[{s}].blocks")):
            where = f"sections[{s}].blocks[{b}]"
            if not isinstance(block, dict):
                raise TypeError(f"{where} must be a dict")
            kind = block.get("type")
            if kind in ("paragraph", "code"):
                blocks.append({"type": kind, "text": _str(block.get("text"), f"{where}.text")})
            elif kind == "bullets":
                items = _list(block.get("items"), f"{where}.items")
                blocks.append({"type": kind, "items": [_str(x, f"{where}.items[{i}]") for i, x in enumerate(items)]})
            elif kind in counts:
                counts[kind] += 1
                blocks.append((_table if kind == "table" else _figure)(block, where, counts[kind]))
            else:
                raise ValueError(f"{where}.type is {kind!r}; expected one of {', '.join(_BLOCK_TYPES)}")
        sections.append({"number": s + 1, "heading": heading, "label": f"{s + 1}. {heading}", "blocks": blocks})
    return {"title": _str(spec.get("title"), "title"),
            "subtitle": _str(spec.get("subtitle"), "subtitle", optional=True), "sections": sections}


# ---------------------------------------------------------------------------- HTML


def _render_html(doc: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("seqedit.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(doc=doc)


# ----------------------------------------------------------------------------- PDF


def _font_files() -> dict[tuple[str, str], Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = {
        (_TEXT, ""): ttf / "DejaVuSans.ttf",
        (_TEXT, "B"): ttf / "DejaVuSans-Bold.ttf",
        (_TEXT, "I"): ttf / "DejaVuSans-Oblique.ttf",
        (_TEXT, "BI"): ttf / "DejaVuSans-BoldOblique.ttf",
        (_MONO, ""): ttf / "DejaVuSansMono.ttf",
        (_FALLBACK, ""): ttf / "STIXGeneral.ttf",
    }
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(2, "font file shipped with matplotlib not found", str(path))
    return files


def _new_pdf(doc: dict):
    from fpdf import FPDF
    from fpdf.fonts import TextStyle

    class _ReportPDF(FPDF):
        def footer(self) -> None:
            self.set_y(-11)
            self.set_font(_TEXT, "", 8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 5, f"Page {self.page_no()} of {self.str_alias_nb_pages}", align="C")

    pdf = _ReportPDF(orientation="P", unit="mm", format="A4")
    for (family, style), path in _font_files().items():
        pdf.add_font(family, style, str(path))
    pdf.set_fallback_fonts([_FALLBACK], exact_match=False)
    pdf.alias_nb_pages("{seqedit-report-nb}")
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=_BOTTOM_MARGIN)
    pdf.set_creation_date(PDF_CREATION_DATE)
    pdf.set_title(doc["title"])
    if doc["subtitle"]:
        pdf.set_subject(doc["subtitle"])
    pdf.set_creator("seqedit report renderer")
    pdf.set_lang("en")
    pdf.set_section_title_styles(TextStyle(font_family=_TEXT, font_style="B", font_size_pt=14, color=_ACCENT,
                                           t_margin=4, b_margin=3))
    return pdf


def _height(pdf, width: float, line_h: float, text: str) -> float:
    return max(1, len(pdf.multi_cell(width, line_h, text, dry_run=True, output="LINES"))) * line_h


def _keep(pdf, height: float) -> None:
    """Start a new page unless `height` mm fit below the cursor (never on a fresh page)."""
    if pdf.will_page_break(height) and pdf.y > pdf.t_margin + 1e-6:
        pdf.add_page()


def _text(pdf, text: str, style: str = "", size: float = _BODY_PT, line_h: float = _BODY_LH,
          color=(0, 0, 0), align: str = "L", family: str = _TEXT, **kwargs) -> None:
    """A left-margin-wide block of text in the given font and colour; the cursor ends below it."""
    pdf.set_font(family, style, size)
    pdf.set_text_color(*color)
    pdf.multi_cell(0, line_h, text, align=align, new_x="LMARGIN", new_y="NEXT", **kwargs)
    pdf.set_text_color(0, 0, 0)


# The contents page: one line per section, its page number on the right, both linked.

_CONTENTS_HEAD_H = 9.0


def _toc_entries(pdf, labels: list[str]) -> list[float]:
    pdf.set_font(_TEXT, "", _BODY_PT)
    return [_height(pdf, pdf.epw - _TOC_PAGE_W, _BODY_LH, label) + 0.8 for label in labels]


def _toc_pages(pdf, heights: list[float]) -> int:
    """Pages the contents take from the cursor on, breaking before an entry that does not fit."""
    pages, y = 1, pdf.y + _CONTENTS_HEAD_H
    for h in heights:
        if y + h > pdf.page_break_trigger:
            pages, y = pages + 1, pdf.t_margin
        y += h
    return pages


def _render_toc(pdf, outline) -> None:
    pdf.set_font(_TEXT, "B", 13)
    pdf.cell(0, 7, "Contents", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(_CONTENTS_HEAD_H - 7)
    for section, h in zip(outline, _toc_entries(pdf, [s.name for s in outline])):
        if pdf.will_page_break(h):
            pdf.add_page()
        link, y = pdf.add_link(page=section.page_number, y=pdf.h - section.dest.top / pdf.k), pdf.y
        pdf.multi_cell(pdf.epw - _TOC_PAGE_W, _BODY_LH, section.name, link=link, new_x="LMARGIN", new_y="NEXT")
        pdf.set_xy(pdf.l_margin + pdf.epw - _TOC_PAGE_W, y)
        pdf.cell(_TOC_PAGE_W, _BODY_LH, str(section.page_number), align="R", link=link)
        pdf.set_xy(pdf.l_margin, y + h)


# Blocks.


def _figure_size(pdf, block: dict) -> tuple[float, float, float]:
    """Width and height of the image, filling the text width unless image and caption would
    be taller than a page, and the height of its caption (mm)."""
    pdf.set_font(_TEXT, "I", _CAPTION_PT)
    caption_h = _height(pdf, pdf.epw, _CAPTION_LH, block["label"])
    aspect = block["height"] / block["width"]
    height = min(pdf.epw * aspect, pdf.eph - caption_h - _FIGURE_GAP - 1.0)
    return height / aspect, height, caption_h


def _column_widths(pdf, block: dict) -> tuple[float, list[float]]:
    """The largest font size at which each column fits its longest word, and widths at that
    size: natural widths if they fit, else the spare width shared out by what each column lacks."""
    pad = 2 * _TABLE_PAD + 0.6
    for size in _TABLE_SIZES_PT:
        full, word = [0.0] * len(block["columns"]), [0.0] * len(block["columns"])
        for style, rows in (("B", [block["columns"]]), ("", block["rows"])):
            pdf.set_font(_TEXT, style, size)
            for row in rows:
                for c, text in enumerate(row):
                    for line in text.split("\n"):
                        full[c] = max(full[c], pdf.get_string_width(line) + pad)
                        for token in line.split():
                            word[c] = max(word[c], min(pdf.get_string_width(token), pdf.epw / 3) + pad)
        if sum(word) <= pdf.epw:
            break
    if sum(full) <= pdf.epw or sum(word) >= pdf.epw:
        return size, full if sum(full) <= pdf.epw else word
    lack = [f - w for f, w in zip(full, word)]
    return size, [w + (pdf.epw - sum(word)) * g / sum(lack) for w, g in zip(word, lack)]


def _table_lead(pdf, block: dict, size: float) -> float:
    """Height of the caption, the header row and the first rows (two lines each, an estimate)."""
    pdf.set_font(_TEXT, "I", _CAPTION_PT)
    rows = 1 + min(3, len(block["rows"]))
    return _height(pdf, pdf.epw, _CAPTION_LH, block["label"]) + 1.5 + rows * (2 * size * 0.3528 * 1.2 + 2 * _TABLE_PAD)


def _lead(pdf, block: dict) -> float:
    """Height of the start of `block`, kept on one page with the heading above it."""
    if block["type"] == "figure":
        _, height, caption_h = _figure_size(pdf, block)
        return height + _FIGURE_GAP + caption_h
    if block["type"] == "table":
        return _table_lead(pdf, block, _column_widths(pdf, block)[0])
    return 3 * (_CODE_LH if block["type"] == "code" else _BODY_LH)


def _pdf_table(pdf, block: dict) -> None:
    from fpdf.enums import TableCellFillMode
    from fpdf.fonts import FontFace

    size, widths = _column_widths(pdf, block)
    _keep(pdf, _table_lead(pdf, block, size))
    _text(pdf, block["label"], "I", _CAPTION_PT, _CAPTION_LH, color=(51, 59, 72))
    pdf.ln(1.5)
    pdf.set_font(_TEXT, "", size)
    pdf.set_draw_color(160, 170, 185)
    with pdf.table(
        width=min(sum(widths), pdf.epw), col_widths=widths, align="LEFT", v_align="TOP",
        text_align=["RIGHT" if n else "LEFT" for n in block["numeric"]],
        line_height=size * 0.3528 * 1.2, padding=_TABLE_PAD, repeat_headings=1,
        headings_style=FontFace(emphasis="BOLD", fill_color=(220, 226, 235)),
        cell_fill_color=(244, 246, 249), cell_fill_mode=TableCellFillMode.ROWS,
    ) as table:
        for row in (block["columns"], *block["rows"]):
            table.row(row)
    pdf.set_draw_color(0, 0, 0)
    if block["note"]:
        pdf.ln(1)
        _text(pdf, block["note"], "I", 8, 3.8, color=(80, 90, 107))
    pdf.ln(4)


def _pdf_figure(pdf, block: dict) -> None:
    width, height, caption_h = _figure_size(pdf, block)
    _keep(pdf, height + _FIGURE_GAP + caption_h)
    y = pdf.y
    pdf.image(io.BytesIO(block["data"]), x=pdf.l_margin + (pdf.epw - width) / 2, y=y, w=width, h=height)
    pdf.set_xy(pdf.l_margin, y + height + _FIGURE_GAP)
    _text(pdf, block["label"], "I", _CAPTION_PT, _CAPTION_LH, color=(51, 59, 72), align="C")
    pdf.ln(4)


def _pdf_block(pdf, block: dict) -> None:
    kind = block["type"]
    if kind == "paragraph":
        _text(pdf, block["text"])
        pdf.ln(2.5)
    elif kind == "bullets":
        for item in block["items"]:
            _keep(pdf, _BODY_LH)
            pdf.set_font(_TEXT, "", _BODY_PT)
            pdf.set_x(pdf.l_margin + 3)
            pdf.cell(4, _BODY_LH, "\u2022")
            pdf.multi_cell(pdf.epw - 7, _BODY_LH, item, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(0.8)
        pdf.ln(1.7)
    elif kind == "code":
        _keep(pdf, 2 * _CODE_LH + 3)
        pdf.set_fill_color(245, 246, 248)
        _text(pdf, block["text"].expandtabs(4).rstrip("\n"), "", _CODE_PT, _CODE_LH, family=_MONO,
              fill=True, wrapmode="CHAR", padding=(1.5, 2.0))
        pdf.ln(3)
    elif kind == "table":
        _pdf_table(pdf, block)
    else:
        _pdf_figure(pdf, block)


def _render_pdf(doc: dict) -> bytes:
    pdf = _new_pdf(doc)
    pdf.add_page()
    _text(pdf, doc["title"], "B", 20, 9)
    if doc["subtitle"]:
        pdf.ln(1)
        _text(pdf, doc["subtitle"], "", 12, 6, color=(80, 90, 107))
    pdf.ln(2)
    pdf.set_draw_color(*_ACCENT)
    pdf.set_line_width(0.6)
    pdf.line(pdf.l_margin, pdf.y, pdf.l_margin + pdf.epw, pdf.y)
    pdf.set_line_width(0.2)
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(5)
    if doc["sections"]:
        labels = [s["label"] for s in doc["sections"]]
        pdf.insert_toc_placeholder(_render_toc, pages=_toc_pages(pdf, _toc_entries(pdf, labels)))
    for section in doc["sections"]:
        pdf.set_font(_TEXT, "B", 14)
        head_h = 4 + _height(pdf, pdf.epw, pdf.font_size, section["label"]) + 3
        _keep(pdf, head_h + (_lead(pdf, section["blocks"][0]) if section["blocks"] else 0.0))
        pdf.start_section(section["label"])
        for block in section["blocks"]:
            _pdf_block(pdf, block)
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
