"""The figure list is the report's (report/build.py FIGURE_ORDER); the workflow, the notebooks, the
captions and the plotting modules must name the same figures."""

import ast
import re
from pathlib import Path

from seqedit.report.build import FIGURE_ORDER, MODEL_FIGURES, SECTION_OF

REPO = Path(__file__).resolve().parents[2]


def _workflow_figures() -> list[str]:
    """Keys of the FIGURES mapping in workflow/rules/common.smk."""
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = re.search(r"^FIGURES = (\{.*?^\})", text, re.M | re.S)
    assert block, "common.smk defines FIGURES = {...}"
    return list(ast.literal_eval(block[1]))


def test_every_place_names_the_report_figures():
    figures = sorted(FIGURE_ORDER)
    assert len(set(FIGURE_ORDER)) == len(FIGURE_ORDER) and sorted(SECTION_OF) == figures
    assert sorted(_workflow_figures()) == figures
    # Each study figure and each figure of the unedited model has a notebook, a caption and a module.
    drawn = sorted(FIGURE_ORDER + MODEL_FIGURES)
    assert not set(MODEL_FIGURES) & set(FIGURE_ORDER)
    assert sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb")) == drawn
    captions = {p.stem for p in (REPO / "workflow" / "report").glob("*.rst")} - {"report", "workflow"}
    assert sorted(captions) == drawn
    modules = {p.stem for p in (REPO / "src" / "seqedit" / "figures").glob("*.py")} - {"__init__", "common"}
    assert sorted(modules) == drawn
