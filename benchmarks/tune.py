"""Hyperparameter grids on a tuning seed: whole sequential runs of `seqedit edit`, one per value.

The testbed hyperparameter files (config/hparams/<method>/testbed.yaml) name the value of each
regularizer that gave the best mean of efficacy, generalization and specificity after the last
batch of a run on a seed the study does not report (100). This script reruns such a grid on any
study whose edit configs and testbed exist, so the choice can be checked or redone for another
testbed (the real-data ones are wider):

    python benchmarks/tune.py --study results/testbed-cf --records data/counterfact/records.json \\
        --kind counterfact --set memit.mom2_update_weight=5,50,500 --set nse.mom2_update_weight=5,50 -j 2

Each run starts from the study's own edit config of that method
(`<study>/config/edit/<method>/main/seed~0.json`: hyperparameters, run length, batch size,
evaluation), with the seed and one hyperparameter replaced; it runs in its own process and
folder under --out, and a run whose metrics.json exists is not redone. The script prints one
table (final efficacy / generalization / specificity and their mean per value, best first per
method, and the efficacy of the curve's first point, before any edit: where it is far from
zero, as ZsRE's token accuracy is, a value that edits nothing scores well on the mean) and
writes it as JSON to <out>/tune.json. Like the benchmarks, it measures; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml


def parse_grid(items: list[str]) -> list[tuple[str, str, object]]:
    """`method.key=v1,v2,...` options as (method, key, value) triples, values parsed as YAML."""
    grid = []
    for item in items:
        name, sep, values = item.partition("=")
        method, dot, key = name.partition(".")
        if not (sep and dot and method and key and values):
            raise SystemExit(f"tune: --set {item!r}: expected METHOD.KEY=V1,V2,...")
        grid += [(method, key, yaml.safe_load(v)) for v in values.split(",")]
    return grid


def run_one(job: dict) -> dict:
    """Run (or reuse) one edit run; return its final metrics and wall time."""
    out = Path(job["out_dir"])
    metrics = out / "metrics.json"
    wall = None
    if not metrics.is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(job["config"], indent=1))
        cmd = ["seqedit", "edit", "--config", str(out / "config.json"), "--model", job["model"],
               "--stats", job["stats"], "--records", job["records"], "--kind", job["kind"],
               "--out-dir", str(out), "--threads", "1"]
        start = time.perf_counter()
        with open(out / "log.txt", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ | {"OMP_NUM_THREADS": "1"}).returncode
        wall = time.perf_counter() - start
        if rc != 0:
            tail = (out / "log.txt").read_text().strip().splitlines()[-1:]
            return {**job["key"], "error": tail[0] if tail else f"exit {rc}"}
    final = json.loads(metrics.read_text())["final"]
    scores = [final["efficacy"], final["generalization"], final["specificity"]]
    points = json.loads((out / "curve.json").read_text())["points"]
    before = points[0]["efficacy"] if points and points[0]["n_edits"] == 0 else None
    return {**job["key"], **{k: round(final[k], 1) for k in ("efficacy", "generalization", "specificity")},
            "mean": round(sum(scores) / 3, 1), "efficacy_before": None if before is None else round(before, 1),
            "wall_s": None if wall is None else round(wall, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True,
                   help="results/<model>: holds config/edit, stats/mom2.pt and the model (model/ when the workflow "
                        "prepared it, else testbed/model)")
    p.add_argument("--records", required=True, help="the study's edit records")
    p.add_argument("--kind", default="counterfact", choices=("counterfact", "zsre", "counterfact_easyedit"))
    p.add_argument("--set", action="append", required=True, metavar="METHOD.KEY=V1,V2",
                   help="one hyperparameter grid (repeatable)")
    p.add_argument("--seed", type=int, default=100, help="the tuning seed (default 100, reported by no study)")
    p.add_argument("--out", default=None, help="run folders and tune.json (default: <study>/tune)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="runs at once, one torch thread each")
    args = p.parse_args(argv)

    study = Path(args.study)
    out = Path(args.out) if args.out else study / "tune"
    prepared = study / "model"  # a pretrained model the workflow prepared (model_source), else the testbed
    model = prepared if (prepared / "config.json").is_file() else study / "testbed" / "model"
    stats = study / "stats" / "mom2.pt"
    for path in (model / "config.json", stats, Path(args.records)):
        if not path.is_file():
            raise SystemExit(f"tune: missing {path}; run the study's workflow up to its statistics first")
    jobs = []
    for method, key, value in parse_grid(args.set):
        base = study / "config" / "edit" / method / "main" / "seed~0.json"
        if not base.is_file():
            raise SystemExit(f"tune: missing {base}: is {method!r} among the study's methods?")
        config = json.loads(base.read_text())
        if key not in config["method"]["hparams"]:
            raise SystemExit(f"tune: {method} has no hyperparameter {key!r}")
        config["seed"] = args.seed
        config["method"]["hparams"][key] = value
        config["variant"] = {"ablation": "tune", "name": f"{key}~{value}", "param": key,
                             "title": f"tuning {key}", "value": value}
        jobs.append({"key": {"method": method, "param": key, "value": value}, "config": config,
                     "out_dir": str(out / method / f"{key}~{value}" / f"seed~{args.seed}"),
                     "model": str(model), "stats": str(stats), "records": args.records, "kind": args.kind})
    print(f"tune: {len(jobs)} runs, {args.jobs} at a time, seed {args.seed}, into {out}", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = []
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(f"  {row['method']} {row['param']}={row['value']}: "
                  + (row["error"] if "error" in row else
                     f"{row['efficacy']}/{row['generalization']}/{row['specificity']} (mean {row['mean']})"),
                  file=sys.stderr)
    rows.sort(key=lambda r: (r["method"], -r.get("mean", -1)))
    print("| method | param | value | efficacy | generalization | specificity | mean | efficacy before editing |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = ([r["error"], "", "", "", ""] if "error" in r else
                 [r["efficacy"], r["generalization"], r["specificity"], r["mean"], r["efficacy_before"]])
        print("| " + " | ".join(str(c) for c in [r["method"], r["param"], r["value"], *cells]) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps({"study": str(study), "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
