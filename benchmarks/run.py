"""Run the benchmarks, print their table and write the figures as JSON.

    python benchmarks/run.py [--model DIR --stats FILE --records FILE --corpus FILE]
                             [--only NAME ...] [--threads N] [--out FILE]

Benchmarks (one module each): methods (seconds per edit and peak memory of every method),
targets (batched vs per-request target optimisation), stats (layer statistics in one pass
vs one pass per layer, accumulator size), nse_vs_memit (NSE vs MEMIT time on one stream).
They measure, they do not judge: each ratio is printed next to the figure it aims for.
Timings are comparable only within one run on one machine.

By default the inputs are the workflow's outputs, relative to the repository root; build
them first with `snakemake --cores all results/testbed/stats/mom2.pt`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bench_methods
import bench_nse_vs_memit
import bench_stats
import bench_targets
import common

BENCHMARKS = {
    "methods": (bench_methods, ("model", "stats", "records")),
    "targets": (bench_targets, ("model", "records")),
    "stats": (bench_stats, ("model", "corpus")),
    "nse_vs_memit": (bench_nse_vs_memit, ("model", "stats", "records")),
}


def default_out() -> Path:
    return common.ROOT / "benchmarks" / "results" / f"{common.host()}.json"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_input_options(p)
    p.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default=None, help="JSON file to write (default: benchmarks/results/<hostname>.json)")
    args = p.parse_args(argv)
    inputs = common.inputs_from_args(args)
    names = args.only or list(BENCHMARKS)
    common.check_inputs(inputs, {need for n in names for need in BENCHMARKS[n][1]})
    common.limit_threads(inputs.threads)
    out = Path(args.out) if args.out else default_out()

    m = common.machine()
    print(f"machine: {common.machine_line(m)}", flush=True)
    results, seconds = {}, {}
    t_start = time.perf_counter()
    for name in names:
        print(f"running {name} ...", flush=True)
        t0 = time.perf_counter()
        results[name] = BENCHMARKS[name][0].run(inputs, log=lambda s: print(s, flush=True))
        seconds[name] = round(time.perf_counter() - t0, 1)
    total = round(time.perf_counter() - t_start, 1)

    lines = report_lines(m, results, seconds, total)
    print()
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "inputs": inputs.as_dict(), "benchmarks": names,
                               "seconds": seconds, "total_seconds": total, "results": results,
                               "table": lines}, indent=1) + "\n")
    print(f"\nwrote {out}")


def report_lines(m: dict, results: dict, seconds: dict, total: float) -> list[str]:
    lines = [f"Machine: {common.machine_line(m)}", ""]
    if "methods" in results:
        r = results["methods"]
        lines += [f"methods: seconds per edit (edit_batch only) and peak RSS; {bench_methods.N_BATCHES} sequential "
                  f"batches on a fresh model in a fresh process, fastest of {r['repeats']} processes", "",
                  *bench_methods.table(r), ""]
    rows = []
    for name in ("targets", "stats", "nse_vs_memit"):
        if name in results:
            rows += BENCHMARKS[name][0].summary(results[name])
    if rows:
        lines += common.format_table(["benchmark", "measure", "measured", "aim"], rows) + [""]
    lines.append("wall seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()) + f"; total {total}")
    return lines


if __name__ == "__main__":
    try:
        main()
    except common.MissingInput as err:
        print(err, file=sys.stderr)
        raise SystemExit(1) from None
