"""Collect every run folder of a study into one JSON file the figure notebooks read.

A run folder holds metrics.json (config with method, variant and seed; final metrics;
provenance), curve.json (points, drift, per-round info), timing.json and hidden.npz. The
collected file keeps, per run, what the figures and the report need, in the order given
(the workflow passes the main comparison first, then the matched controls, then the ablations
in config order).

An ablation arm whose settings act as the method's main run's (it states the value the method's
file already sets) is not run again on a main seed: the workflow passes it as
`MAIN_RUN_FOLDER@ARM_SETTINGS_FILE`, and its record is the main run's results under the arm's
label, after checking that the two settings are the same run (`effective_settings`).
"""

from __future__ import annotations

import json
from pathlib import Path

from seqedit.analysis.labels import MAIN
from seqedit.repro import write_json


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: the run in {path.parent} did not complete") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def _same_run(ran: dict, arm: dict, where: str) -> None:
    """Refuse to label a run with settings it was not run with (method, seed, run settings and
    effective hyperparameters must agree)."""
    from seqedit.registry import effective_settings

    method = ran.get("method", {}).get("name")
    problems = []
    if arm.get("method", {}).get("name") != method or arm.get("seed") != ran.get("seed"):
        problems.append("method or seed")
    elif ran.get("run") != arm.get("run"):
        problems.append("run settings")
    elif effective_settings(method, ran["method"]["hparams"]) != effective_settings(method, arm["method"]["hparams"]):
        problems.append("hyperparameters")
    for key in ("model", "evaluation"):
        if ran.get(key) != arm.get(key):
            problems.append(key)
    if problems:
        raise ValueError(f"{where}: the arm's {', '.join(problems)} differ from the run it would reuse")


def _split(entry: str | Path) -> tuple[Path, Path | None]:
    """A run entry: FOLDER, or FOLDER@SETTINGS for an ablation arm that reuses the run in FOLDER."""
    folder, _, settings = str(entry).partition("@")
    return Path(folder), Path(settings) if settings else None


def load_run(run_dir: str | Path) -> dict:
    """One run's record in the study file. `run_dir` is a run folder, or FOLDER@SETTINGS for an
    ablation arm that reuses the run in FOLDER (SETTINGS: the arm's own settings file)."""
    d, arm_file = _split(run_dir)
    metrics, curve, timing = _read(d / "metrics.json"), _read(d / "curve.json"), _read(d / "timing.json")
    cfg = metrics["config"]
    if arm_file is not None:
        arm = _read(arm_file)
        _same_run(cfg, arm, f"{arm_file} reusing {d}")
        cfg = {**cfg, "variant": arm.get("variant"), "method": arm["method"]}
    variant = cfg.get("variant") or {"name": MAIN, "ablation": None, "value": None, "param": None, "title": None}
    return {
        "dir": str(d),
        "reuses": str(d) if arm_file is not None else None,  # the main run this arm's record reuses
        "method": metrics["method"],
        "seed": metrics["seed"],
        "variant": variant["name"],
        "ablation": variant.get("ablation"),
        "value": variant.get("value"),
        "param": variant.get("param"),
        "ablation_title": variant.get("title"),
        "control": variant.get("control"),  # a matched control: its name, the method it matches
        "match": variant.get("match"),
        "n_edits": metrics["n_edits"],
        "batch_size": metrics["batch_size"],
        "final": metrics["final"],
        "hparams": cfg.get("method", {}).get("hparams", {}),
        "points": curve["points"],
        "drift": curve.get("drift", []),
        "rounds": curve.get("rounds", []),
        "timing": {k: timing.get(k) for k in ("edit_seconds", "seconds_per_edit", "peak_rss_mb", "peak_gpu_mb")},
        "hidden": str(d / "hidden.npz") if (d / "hidden.npz").exists() else None,
        "provenance": metrics["provenance"],
    }


def collect(run_dirs: list[str | Path]) -> dict:
    """{"runs": [...], "setup": {...}, "provenance": {...}} for the given run folders."""
    if not run_dirs:
        raise ValueError("collect: no run folders given")
    runs = [load_run(d) for d in run_dirs]
    first = json.loads((_split(run_dirs[0])[0] / "metrics.json").read_text())
    cfg = first["config"]
    main = [r for r in runs if r["variant"] == MAIN] or runs
    setup = {
        "model": cfg.get("model", {}),
        "run": cfg.get("run", {}),
        "evaluation": cfg.get("evaluation", {}),
        "methods": list(dict.fromkeys(r["method"] for r in main)),
        "seeds": sorted({r["seed"] for r in main}),
        "hparams": {r["method"]: r["hparams"] for r in main},
        "ablations": list(dict.fromkeys(r["ablation"] for r in runs if r["ablation"])),
        "controls": list(dict.fromkeys(r["control"] for r in runs if r["control"])),
    }
    commits = sorted({r["provenance"].get("git", {}).get("commit") or "unknown" for r in runs})
    machines = sorted({(r["provenance"].get("machine") or {}).get("cpu") or "unknown" for r in runs})
    return {"setup": setup, "runs": runs, "provenance": {**first["provenance"], "commits": commits, "machines": machines}}


def write_study(run_dirs: list[str | Path], out: str | Path) -> dict:
    study = collect(run_dirs)
    write_json(out, study)
    return study
