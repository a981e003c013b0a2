"""The PDF's table of contents: every section listed, in order, with the page its heading is on."""

from __future__ import annotations

import re
from collections import Counter

import pypdf
import pytest

from seqedit.report import render_report

# Enough sections that the contents run over onto a second page; some headings wrap in the
# contents, some sections are long enough to push the next heading onto a later page.
N_SECTIONS = 70
LONG_HEADING = "A heading long enough to wrap onto a second line of the contents, " * 2


def _heading(i: int) -> str:
    return f"Part {i:02d} " + (LONG_HEADING if i % 9 == 4 else "of the study")


def _paragraph(i: int) -> str:
    return " ".join(f"Sentence {k} of section {i}." for k in range(1 + (i % 7) * 6))


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    spec = {
        "title": "Contents check",
        "sections": [
            {"heading": _heading(i), "blocks": [{"type": "paragraph", "text": _paragraph(i)}]}
            for i in range(1, N_SECTIONS + 1)
        ],
    }
    out = tmp_path_factory.mktemp("toc")
    render_report(spec, out / "r.html", out / "r.pdf")
    reader = pypdf.PdfReader(out / "r.pdf")
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    labels = [f"{i}. {_heading(i)}".strip() for i in range(1, N_SECTIONS + 1)]
    return reader, texts, [" ".join(label.split()) for label in labels]


def _contents_pages(texts, labels):
    """Pages (1-based) holding the contents: those before the one where section 1's text starts."""
    first_body = next(i for i, t in enumerate(texts, start=1) if "Sentence 0 of section 1." in t)
    return list(range(1, first_body))


def _heading_pages(texts, labels, body_from):
    """The page each heading is printed on in the body, found from its text alone."""
    pages, page = [], body_from
    for label in labels:
        while not re.search(rf"(^| ){re.escape(label)} Sentence 0 of section", texts[page - 1]):
            page += 1
            assert page <= len(texts), f"heading {label!r} not found in the body"
        pages.append(page)
    return pages


def test_contents_span_the_pages_reserved_for_them(document):
    _, texts, labels = document
    toc = _contents_pages(texts, labels)
    assert toc == [1, 2], "70 entries should need a second contents page"
    assert "Contents" in texts[0] and "Contents check" in texts[0]


def test_contents_list_every_section_with_the_page_of_its_heading(document):
    _, texts, labels = document
    toc = _contents_pages(texts, labels)
    heading_pages = _heading_pages(texts, labels, toc[-1] + 1)
    assert len(set(heading_pages)) > 10, "the sections should spread over many pages"
    contents = " ".join(texts[p - 1] for p in toc)
    listed = [int(m.group(1)) for label in labels
              for m in [re.search(rf"{re.escape(label)} (\d+)\b", contents)] if m]
    assert len(listed) == N_SECTIONS, "every section is listed with a page number"
    assert listed == heading_pages
    # Listed in document order.
    positions = [contents.index(label + " ") for label in labels]
    assert positions == sorted(positions)


def test_outline_and_contents_links_point_at_the_heading_pages(document):
    reader, texts, labels = document
    toc = _contents_pages(texts, labels)
    heading_pages = _heading_pages(texts, labels, toc[-1] + 1)
    outline = [(" ".join(item.title.split()), reader.get_destination_page_number(item) + 1)
               for item in reader.outline]
    assert outline == list(zip(labels, heading_pages))
    # Each entry's label and its page number are both links to the heading's page.
    targets = []
    for p in toc:
        for annot in reader.pages[p - 1].get("/Annots") or []:
            annot = annot.get_object()
            if annot.get("/Subtype") == "/Link" and "/Dest" in annot:
                targets.append(reader.get_page_number(annot["/Dest"][0].get_object()) + 1)
    # (a label wrapped over two lines is two links).
    sections_on = Counter(heading_pages)
    links_to = Counter(targets)
    assert set(links_to) == set(sections_on)
    for page, n in sections_on.items():
        assert links_to[page] >= 2 * n, f"page {page}: {links_to[page]} links for {n} sections"
