"""Tests for the report renderer: HTML and PDF content, layout bounds, determinism, errors."""

from __future__ import annotations

import re

import pypdf
import pytest

from seqedit.report import render_report

MM = 72 / 25.4  # PDF points per millimetre
A4_W, A4_H = 210 * MM, 297 * MM

COLUMNS = [
    "method",
    "efficacy",
    "generalization",
    "specificity",
    "fluency",
    "consistency",
    "norm_ΔW",
    "n_edits",
    "runtime_s",
]
UNICODE_TEXT = "Edits keep ‖ΔW‖ ≥ 0.5 ± 0.1 with θ → ρ × 2 − 1."
TITLE = "Sequential editing report"
HEADINGS = ["Results overview", "Figures and provenance"]
TABLE_CAPTION = "Metrics after each edit batch"
FIGURE_CAPTIONS = ["Efficacy over edits", "Weight norm growth"]
FIGURE_PIXELS = [(300, 150), (120, 480)]  # (width, height): one wide, one tall


def _make_png(path, width_px, height_px):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 60
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax.plot([0, 1, 2, 3], [0, 2, 1, 3])
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _table_rows(n=60):
    rows = []
    for i in range(n):
        rows.append(
            [f"edit-{i:03d}", round(0.5 + i / 200, 4), 0.25, None, 612.5, "ok", i * 1.5, i + 1, "12 s"]
        )
    return rows


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figs")
    paths = []
    for i, (w, h) in enumerate(FIGURE_PIXELS):
        path = folder / f"figure_{i}.png"
        _make_png(path, w, h)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def spec(figures):
    return {
        "title": TITLE,
        "subtitle": "NSE vs. baselines <draft>",
        "sections": [
            {
                "heading": HEADINGS[0],
                "blocks": [
                    {"type": "paragraph", "text": UNICODE_TEXT},
                    {"type": "paragraph", "text": "Markup stays text: <b>bold</b> & co."},
                    {"type": "bullets", "items": ["first point", "second point with ≥ sign"]},
                    {
                        "type": "table",
                        "caption": TABLE_CAPTION,
                        "columns": COLUMNS,
                        "rows": _table_rows(),
                        "note": "Missing values are shown as a dash.",
                    },
                ],
            },
            {
                "heading": HEADINGS[1],
                "blocks": [
                    {"type": "figure", "path": str(figures[0]), "caption": FIGURE_CAPTIONS[0]},
                    {"type": "figure", "path": str(figures[1]), "caption": FIGURE_CAPTIONS[1]},
                    {"type": "code", "text": "seed: 0\nmethod: nse\n  layers: [4, 5, 6]\n"},
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def rendered(spec, tmp_path_factory):
    """Render the spec twice, into two different (not yet existing) nested folders."""
    root = tmp_path_factory.mktemp("out")
    outputs = []
    for name in ("first", "second"):
        html_path = root / name / "nested" / "report.html"
        pdf_path = root / name / "pdf" / "report.pdf"
        render_report(spec, html_path, pdf_path)
        outputs.append((html_path, pdf_path))
    return outputs


@pytest.fixture(scope="module")
def reader(rendered):
    return pypdf.PdfReader(rendered[0][1])


@pytest.fixture(scope="module")
def page_texts(reader):
    return [page.extract_text() for page in reader.pages]


# ---------------------------------------------------------------------------- PDF


def test_pdf_is_a_multipage_a4_document(rendered, reader):
    assert rendered[0][1].read_bytes().startswith(b"%PDF")
    assert len(reader.pages) > 1
    for page in reader.pages:
        box = page.mediabox
        assert float(box.width) == pytest.approx(A4_W, abs=1)
        assert float(box.height) == pytest.approx(A4_H, abs=1)


def test_pdf_text_has_title_headings_captions_and_unicode(page_texts):
    text = "\n".join(page_texts)
    assert TITLE in page_texts[0]
    assert "Contents" in page_texts[0]
    for heading in HEADINGS:
        assert heading in text
        # Listed in the contents on page 1 as well as in the body.
        assert heading in page_texts[0] or text.count(heading) >= 2
    assert f"Table 1: {TABLE_CAPTION}" in text
    for i, caption in enumerate(FIGURE_CAPTIONS, start=1):
        assert f"Figure {i}: {caption}" in text
    assert "edit-059" in text  # last table row
    assert "‖ΔW‖ ≥ 0.5 ± 0.1" in text
    assert "θ → ρ × 2 − 1" in text
    assert "layers: [4, 5, 6]" in text  # code block


def test_pdf_page_numbers_in_footer(page_texts):
    n = len(page_texts)
    for i, text in enumerate(page_texts, start=1):
        assert f"Page {i} of {n}" in text


def test_pdf_contents_lists_section_pages(page_texts):
    for number, heading in enumerate(HEADINGS, start=1):
        label = f"{number}. {heading}"
        body_page = next(
            i for i, t in enumerate(page_texts, start=1) if t.count(label) >= (2 if i == 1 else 1)
        )
        assert re.search(rf"{re.escape(label)}\s*{body_page}\b", page_texts[0])


def test_pdf_table_splits_and_repeats_header(page_texts):
    table_pages = [i for i, t in enumerate(page_texts) if re.search(r"edit-\d{3}", t)]
    assert len(table_pages) >= 2, "the 60-row table should span several pages"
    for i in table_pages:
        for column in COLUMNS:
            assert column in page_texts[i], f"header {column!r} missing on page {i + 1}"
    assert "edit-000" in page_texts[table_pages[0]]
    assert "edit-059" in page_texts[table_pages[-1]]


def test_pdf_uses_embedded_dejavu_fonts(reader):
    fonts = set()
    for page in reader.pages:
        resources = page.get("/Resources") or {}
        for font in (resources.get("/Font") or {}).values():
            fonts.add(str(font.get_object()["/BaseFont"]))
    assert any("DejaVuSans" in f for f in fonts), fonts
    assert not any(f.lstrip("/") in {"Helvetica", "Times-Roman", "Courier"} for f in fonts)


def _matmul(a, b):
    a1, b1, c1, d1, e1, f1 = a
    a2, b2, c2, d2, e2, f2 = b
    return (
        a1 * a2 + b1 * c2,
        a1 * b2 + b1 * d2,
        c1 * a2 + d1 * c2,
        c1 * b2 + d1 * d2,
        e1 * a2 + f1 * c2 + e2,
        e1 * b2 + f1 * d2 + f2,
    )


def _image_rects(reader):
    """(page index, x, y, width, height) in points for every image drawn."""
    from pypdf.generic import ContentStream

    rects = []
    for index, page in enumerate(reader.pages):
        xobjects = (page.get("/Resources") or {}).get("/XObject") or {}
        images = {name for name, obj in xobjects.items() if obj.get_object().get("/Subtype") == "/Image"}
        ctm, stack = (1, 0, 0, 1, 0, 0), []
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"q":
                stack.append(ctm)
            elif operator == b"Q":
                ctm = stack.pop()
            elif operator == b"cm":
                ctm = _matmul(tuple(float(v) for v in operands), ctm)
            elif operator == b"Do" and operands[0] in images:
                a, _, _, d, e, f = ctm
                rects.append((index, e, f, a, d))
    return rects


def test_pdf_figures_fit_the_page_and_keep_aspect_ratio(reader, page_texts):
    rects = _image_rects(reader)
    assert len(rects) == 2
    for (page, x, y, w, h), (px_w, px_h), caption in zip(rects, FIGURE_PIXELS, FIGURE_CAPTIONS):
        assert x >= 15 * MM - 0.5 and x + w <= A4_W - 15 * MM + 0.5
        assert y >= 15 * MM - 0.5 and y + h <= A4_H - 15 * MM + 0.5
        assert w / h == pytest.approx(px_w / px_h, rel=0.01)
        assert caption in page_texts[page]  # caption on the same page as its figure
    # The wide figure spans the text width (A4 minus two 15 mm margins).
    assert rects[0][3] == pytest.approx(180 * MM, rel=0.01)


# --------------------------------------------------------------------------- HTML


def test_html_content(rendered):
    text = rendered[0][0].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert f"Table 1: {TABLE_CAPTION}" in text
    for i, caption in enumerate(FIGURE_CAPTIONS, start=1):
        assert f"Figure {i}: {caption}" in text
    for column in COLUMNS:
        assert f">{column}</th>" in text
    assert text.count("data:image/png;base64,") == 2
    assert "edit-059" in text
    assert UNICODE_TEXT in text
    # Table of contents linking to each section.
    for number, heading in enumerate(HEADINGS, start=1):
        assert f'<a href="#section-{number}">{heading}</a>' in text
        assert f'id="section-{number}"' in text
    # Self-contained: no external resources.
    assert not re.search(r'(src|href)="(?!data:|#)', text)


def test_html_escapes_text(rendered):
    text = rendered[0][0].read_text(encoding="utf-8")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co." in text
    assert "<b>bold</b>" not in text
    assert "NSE vs. baselines &lt;draft&gt;" in text


# -------------------------------------------------------------------- determinism


def test_outputs_are_deterministic(rendered, reader):
    (html_a, pdf_a), (html_b, pdf_b) = rendered
    assert html_a.read_bytes() == html_b.read_bytes()
    assert pdf_a.read_bytes() == pdf_b.read_bytes()
    # A fixed creation date, not the time of rendering (two quick renders could share it).
    assert reader.metadata.creation_date.year == 2000


def test_no_temporary_files_left(rendered):
    for html_path, pdf_path in rendered:
        assert sorted(p.name for p in html_path.parent.iterdir()) == ["report.html"]
        assert sorted(p.name for p in pdf_path.parent.iterdir()) == ["report.pdf"]


# ------------------------------------------------------------------------- errors


def test_missing_figure_raises_naming_the_path(spec, tmp_path):
    missing = tmp_path / "no_such_figure.png"
    bad = {**spec, "sections": [{"heading": "Figures", "blocks": [
        {"type": "figure", "path": str(missing), "caption": "absent"},
    ]}]}
    html_path, pdf_path = tmp_path / "out" / "r.html", tmp_path / "out" / "r.pdf"
    with pytest.raises(FileNotFoundError) as info:
        render_report(bad, html_path, pdf_path)
    assert str(missing) in str(info.value)
    assert not html_path.exists() and not pdf_path.exists()


@pytest.mark.parametrize(
    "block, message",
    [
        ({"type": "chart"}, "chart"),
        ({"type": "table", "caption": "t", "columns": ["a", "b"], "rows": [[1]]}, "rows[0]"),
        ({"type": "table", "caption": "t", "columns": ["a"], "rows": [[{"x": 1}]]}, "rows[0][0]"),
    ],
)
def test_malformed_blocks_are_rejected(block, message, tmp_path):
    bad = {"title": "t", "sections": [{"heading": "h", "blocks": [block]}]}
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        render_report(bad, tmp_path / "r.html", tmp_path / "r.pdf")
    assert not (tmp_path / "r.html").exists()
