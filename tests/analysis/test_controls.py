"""Plain MEMIT in the claims, the matched NMKE control, and the report's numerics tables, on
synthetic run folders with known numbers."""

from __future__ import annotations

import json

import pytest

from seqedit.analysis.ci import mean_ci
from seqedit.analysis.claims import checklist
from seqedit.analysis.collect import collect
from seqedit.report.build import controls_table, numerics_blocks

from .test_study import write_run

# final (efficacy, specificity) per seed
FINAL = {"memit": [(80.0, 40.0), (82.0, 42.0), (81.0, 41.0)],  # plain MEMIT collapses
         "memit_seq": [(85.0, 90.0), (86.0, 92.0), (84.0, 91.0)],  # MEMIT-seq keeps specificity
         "nse": [(90.0, 70.0), (91.0, 71.0), (89.0, 72.0)],
         "alphaedit": [(70.0, 49.0), (71.0, 53.0), (72.0, 51.0)],
         "nmke": [(75.0, 60.0), (76.0, 61.0), (74.0, 62.0)]}
CONTROL = [(78.0, 66.0), (79.0, 68.0), (77.0, 67.0)]  # AlphaEdit with NMKE's projector and ridge
# Every paired difference varies over the seeds, so each verdict comes from a t-interval of
# nonzero width (a difference equal on every seed is marked "no spread", tests/analysis/test_study.py).
VARIANT = {"name": "control~nmke_matched", "ablation": None, "value": None, "param": None,
           "title": "AlphaEdit with NMKE's projector and ridge", "control": "nmke_matched", "match": "nmke",
           "matched_params": ["threshold_mode", "l2"]}


def _set_rounds(run_dir, rounds):
    curve = json.loads((run_dir / "curve.json").read_text())
    curve["rounds"] = rounds
    (run_dir / "curve.json").write_text(json.dumps(curve))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = [write_run(root, m, s, *FINAL[m][s]) for m in FINAL for s in range(3)]
    dirs += [write_run(root, "alphaedit", s, *CONTROL[s], variant=VARIANT) for s in range(3)]
    for d in dirs:
        method = d.parent.parent.name
        if method in ("alphaedit", "nmke"):
            # the control keeps every direction of layer 1: a degenerate projector
            dims = {"0": 100, "1": 256 if "control" in str(d) else 120}
            _set_rounds(d, [{"round": r, "null_space_dim": dims, "key_dim": 256} for r in range(2)])
    _set_rounds(dirs[0], [{"round": 0, "rounding": {"0": 0.01, "1": 0.03}},
                          {"round": 1, "rounding": {"0": 0.03, "1": 0.05}}])  # memit seed 0
    return collect(dirs)


def _claim(study, start):
    return next(c for c in checklist(study) if c["claim"].startswith(start))


def test_collect_carries_the_control(study):
    controls = [r for r in study["runs"] if r["control"]]
    assert len(controls) == 3 and {r["match"] for r in controls} == {"nmke"}
    assert study["setup"]["controls"] == ["nmke_matched"]
    assert "alphaedit" in study["setup"]["methods"] and len(study["setup"]["seeds"]) == 3


def test_memit_claims_test_plain_memit(study):
    spec = _claim(study, "NSE keeps specificity where MEMIT (plain) collapses")
    m, _, _ = mean_ci(FINAL["nse"][s][1] - FINAL["memit"][s][1] for s in range(3))  # +30: holds against plain
    assert spec["verdict"] == "holds" and f"difference {m:+.1f}" in spec["measured"] and "MEMIT " in spec["measured"]
    alpha = _claim(study, "Null-space projection preserves knowledge")
    assert alpha["verdict"] == "holds"  # 51 vs 41; against MEMIT-seq (91) it would not


def test_nmke_is_compared_with_alphaedit_and_with_the_matched_control(study):
    papers = [c for c in checklist(study) if c["claim"] == "NMKE's sparse mask keeps specificity above AlphaEdit's"][0]
    matched = _claim(study, "NMKE's sparse mask keeps specificity above AlphaEdit's: matched control")
    m_papers, _, _ = mean_ci(FINAL["nmke"][s][1] - FINAL["alphaedit"][s][1] for s in range(3))  # +10
    m_matched, _, _ = mean_ci(FINAL["nmke"][s][1] - CONTROL[s][1] for s in range(3))  # -6
    assert papers["verdict"] == "holds" and f"difference {m_papers:+.1f}" in papers["measured"]
    assert matched["verdict"] == "does not hold" and f"difference {m_matched:+.1f}" in matched["measured"]
    assert "NMKE's projector and ridge" in matched["measured"]
    score = _claim(study, "NMKE outperforms AlphaEdit in long sequences: matched control")
    assert score["verdict"] != "not tested"


def test_matched_claims_are_not_tested_without_the_control(study):
    main_only = {**study, "runs": [r for r in study["runs"] if not r["control"]]}
    matched = _claim(main_only, "NMKE's sparse mask keeps specificity above AlphaEdit's: matched control")
    assert matched["verdict"] == "not tested" and "matched AlphaEdit control" in matched["measured"]


def test_report_tables_of_controls_degenerate_projectors_and_rounding(study):
    table = controls_table(study)
    assert table["rows"] == [["AlphaEdit: AlphaEdit with NMKE's projector and ridge", "3", "78.0", "68.0", "67.0"]]
    blocks = {b["caption"].split(" (")[0].split(":")[0]: b for b in numerics_blocks(study)}
    dims = blocks["Null-space dimension per layer"]["rows"]
    assert ["AlphaEdit", "0: 100 / 256, 1: 120 / 256", "none"] in dims
    assert ["AlphaEdit (control~nmke_matched)", "0: 100 / 256, 1: 256 / 256",
            "layer 1: all directions (P = I, nothing protected)"] in dims
    assert len(dims) == 3  # AlphaEdit, its control and NMKE, first seed each
    rounding = blocks["Update lost to rounding in weights below float32"]["rows"]
    assert rounding == [["MEMIT, seed 0", "0: 0.02 (max 0.03), 1: 0.04 (max 0.05)"]]
    plain = {**study, "runs": [{**r, "rounds": []} for r in study["runs"]]}
    assert numerics_blocks(plain) == [] and controls_table({**study, "runs": study["runs"][:3]}) is None


def test_alphaedit_with_nmke_projector_and_ridge_is_its_own_control(study):
    """Where AlphaEdit's files already state NMKE's projector and ridge, the workflow runs no
    control; AlphaEdit's main runs stand in for it, and the claim says so."""
    same = {"threshold_mode": "absolute", "nullspace_threshold": 0.02, "nullspace_energy": 0.01, "l2": 10.0}
    runs = []
    for r in study["runs"]:
        if r["control"]:
            continue
        if r["method"] in ("alphaedit", "nmke"):
            energy = 0.5 if r["method"] == "nmke" else 0.01  # unused in absolute mode: may differ
            r = {**r, "hparams": {**r["hparams"], **same, "nullspace_energy": energy}}
        runs.append(r)
    matched = _claim({**study, "runs": runs}, "NMKE's sparse mask keeps specificity above AlphaEdit's: matched control")
    m, _, _ = mean_ci(FINAL["nmke"][s][1] - FINAL["alphaedit"][s][1] for s in range(3))
    assert f"difference {m:+.1f}" in matched["measured"] and "its main runs are the control" in matched["measured"]
    other = [{**r, "hparams": {**r["hparams"], "l2": 1.0}} if r["method"] == "nmke" else r for r in runs]
    matched = _claim({**study, "runs": other}, "NMKE's sparse mask keeps specificity above AlphaEdit's: matched control")
    assert matched["verdict"] == "not tested"
