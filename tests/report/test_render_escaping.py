"""HTML special characters in any text of the spec reach the page as text, never as markup."""

from __future__ import annotations

import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pypdf
import pytest

from seqedit.report import render_report

NASTY = "<script>alert(\"x & 'y'\")</script> <b>&amp;</b>"
REPO = Path(__file__).resolve().parents[2]


class _Collect(HTMLParser):
    """Start tags, attribute values and the text inside each element, charrefs decoded."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.texts, self._open = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, name, value) for name, value in attrs)
        if tag not in ("img", "meta", "br"):
            self._open.append([tag, ""])

    def handle_endtag(self, tag):
        while self._open:
            name, text = self._open.pop()
            self.texts.append((name, text))
            if self._open:
                self._open[-1][1] += text
            if name == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][1] += data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = tmp_path_factory.mktemp("escape")
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    fig.savefig(out / "f.png")
    plt.close(fig)
    spec = {
        "title": f"Title {NASTY}",
        "subtitle": f"Subtitle {NASTY}",
        "sections": [{"heading": f"Heading {NASTY}", "blocks": [
            {"type": "paragraph", "text": f"Paragraph {NASTY}"},
            {"type": "bullets", "items": [f"Item {NASTY}"]},
            {"type": "table", "caption": f"Caption {NASTY}", "columns": [f"Column {NASTY}", "n"],
             "rows": [[f"Cell {NASTY}", 1]], "note": f"Note {NASTY}"},
            {"type": "figure", "path": str(out / "f.png"), "caption": f"Figure caption {NASTY}"},
            {"type": "code", "text": f"code {NASTY}"},
        ]}],
    }
    render_report(spec, out / "r.html", out / "r.pdf")
    return (out / "r.html").read_text(encoding="utf-8"), out / "r.pdf"


def test_no_markup_from_the_spec_reaches_the_html(rendered):
    page, _ = rendered
    assert "<script" not in page and "<b>" not in page
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags


def test_every_text_of_the_spec_is_shown_verbatim_in_the_html(rendered):
    page, _ = rendered
    parser = _Collect()
    parser.feed(page)
    texts = set(parser.texts)
    expected = [
        ("title", f"Title {NASTY}"), ("h1", f"Title {NASTY}"), ("p", f"Subtitle {NASTY}"),
        ("a", f"Heading {NASTY}"), ("h2", f"1. Heading {NASTY}"), ("p", f"Paragraph {NASTY}"),
        ("li", f"Item {NASTY}"), ("caption", f"Table 1: Caption {NASTY}"), ("th", f"Column {NASTY}"),
        ("td", f"Cell {NASTY}"), ("p", f"Note {NASTY}"), ("figcaption", f"Figure 1: Figure caption {NASTY}"),
        ("code", f"code {NASTY}"),
    ]
    for item in expected:
        assert item in texts, item
    assert ("img", "alt", f"Figure caption {NASTY}") in parser.attrs


def test_the_pdf_shows_the_characters_not_entities(rendered):
    _, pdf = rendered
    text = " ".join(" ".join(p.extract_text() for p in pypdf.PdfReader(pdf).pages).split())
    for where in ("Paragraph", "Item", "Cell", "Note", "code"):
        assert f"{where} {NASTY}" in text, where
    assert "&lt;" not in text and "&#" not in text


def test_the_template_ships_as_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "src" / "seqedit" / "report"
    shipped = {p for pattern in data["seqedit.report"] for p in package.glob(pattern)}
    assert package / "templates" / "report.html.j2" in shipped
