"""`methods`: seconds per edit and peak memory of every method on the testbed.

For each method and batch size, a fresh subprocess loads an unedited model, builds the editor
with the method's testbed hyperparameters and edits two batches of the seed's edit stream in
sequence. Only the `edit_batch` calls are timed (editor construction is reported apart); this
is done twice, each time in a new process, and the faster run is reported. Peak
memory is the process's peak resident set size (`getrusage`), read before the first and after
the last edit; a fresh process per measurement keeps one method's peak out of the next's.

    python benchmarks/bench_methods.py --worker METHOD --batch-size B [input options]

runs one measurement and prints it as one JSON line (what `run` below calls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

BATCH_SIZES = (10, 25)
N_BATCHES = 2
REPEATS = 2  # fresh processes per method and batch size; the fastest counts
MARK = "BENCH-RESULT "


def measure_one(method: str, batch_size: int, inputs: common.Inputs, n_batches: int = N_BATCHES) -> dict:
    """Runs in the worker process."""
    common.limit_threads(inputs.threads)
    requests = common.stream(inputs, batch_size * n_batches)
    stats = common.load_stats(inputs)
    model, tok, spec = common.load(inputs)
    t0 = time.perf_counter()
    editor = common.make_editor(method, inputs, model, tok, spec, stats)
    setup_s = time.perf_counter() - t0
    rss_before = common.peak_rss_mb()
    batch_s = []
    for r in range(n_batches):
        batch = requests[r * batch_size : (r + 1) * batch_size]
        t0 = time.perf_counter()
        editor.edit_batch(batch, r)
        batch_s.append(time.perf_counter() - t0)
    rss_after = common.peak_rss_mb()
    n = batch_size * n_batches
    return {
        "method": method, "batch_size": batch_size, "n_batches": n_batches, "n_edits": n,
        "edit_seconds": round(sum(batch_s), 4), "seconds_per_edit": round(sum(batch_s) / n, 5),
        "batch_seconds": [round(s, 4) for s in batch_s], "setup_seconds": round(setup_s, 4),
        "peak_rss_mb": round(rss_after, 1), "peak_rss_before_edits_mb": round(rss_before, 1),
        "peak_rss_growth_mb": round(rss_after - rss_before, 1),
    }


def run_worker(method: str, batch_size: int, inputs: common.Inputs) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(inputs.threads), "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--batch-size", str(batch_size),
           *inputs.as_args()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"method": method, "batch_size": batch_size, "error": tail[0]}


def run(inputs: common.Inputs, methods=common.METHODS, batch_sizes=BATCH_SIZES, repeats: int = REPEATS,
        log=print) -> dict:
    rows = []
    for method in methods:
        for b in batch_sizes:
            runs = [run_worker(method, b, inputs) for _ in range(repeats)]
            ok = [r for r in runs if "error" not in r]
            row = min(ok, key=lambda r: r["edit_seconds"]) if ok else runs[0]
            if ok:
                row = {**row, "edit_seconds_all_runs": [r["edit_seconds"] for r in ok],
                       "peak_rss_mb_all_runs": [r["peak_rss_mb"] for r in ok]}
            rows.append(row)
            if "error" in row:
                log(f"  methods: {method} @ {b}: FAILED: {row['error']}")
            else:
                log(f"  methods: {method} @ {b}: {row['seconds_per_edit']:.4f} s/edit, peak RSS {row['peak_rss_mb']:.0f} MiB")
    return {
        "description": f"{N_BATCHES} sequential batches per method and batch size, a fresh process and model each; "
                       f"only edit_batch is timed; fastest of {repeats} processes; peak RSS from getrusage in that "
                       "process (growth: peak after the edits minus peak before the first edit)",
        "repeats": repeats,
        "batch_sizes": list(batch_sizes), "rows": rows,
    }


def table(result: dict) -> list[str]:
    sizes = result["batch_sizes"]
    head = ["method"] + [f"s/edit @{b}" for b in sizes] + [f"peak RSS MiB @{b}" for b in sizes] + \
           [f"RSS growth MiB @{b}" for b in sizes]
    by = {(r["method"], r["batch_size"]): r for r in result["rows"]}
    body = []
    for m in dict.fromkeys(r["method"] for r in result["rows"]):
        cells = [m]
        for key, fmt in (("seconds_per_edit", "{:.4f}"), ("peak_rss_mb", "{:.0f}"), ("peak_rss_growth_mb", "{:.1f}")):
            for b in sizes:
                r = by.get((m, b), {})
                cells.append(fmt.format(r[key]) if key in r else ("failed" if "error" in r else "-"))
        body.append(cells)
    return common.format_table(head, body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", required=True, choices=common.METHODS)
    p.add_argument("--batch-size", type=int, required=True)
    common.add_input_options(p)
    args = p.parse_args()
    result = measure_one(args.worker, args.batch_size, common.inputs_from_args(args))
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
