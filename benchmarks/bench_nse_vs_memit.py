"""`nse_vs_memit`: NSE against MEMIT on the same stream of edits.

Both methods edit the same 50 requests of the seed's edit stream in batches of 10, each on a
freshly loaded unedited model with its testbed hyperparameters. Timed: the sum of the
`edit_batch` calls, so NSE's whole cost is in it (z optimised on θ₀ with the weight swap,
neuron selection, the restricted solves, the residual checks and every extra iterative pass).
The runs alternate, MEMIT then NSE, and each method's fastest run counts.
"""

from __future__ import annotations

import time

import common

N_EDITS, BATCH = 50, 10
AIM = 1.3  # NSE / MEMIT time aimed for, at most


def edit_run(method: str, inputs: common.Inputs, requests, stats, batch: int) -> dict:
    model, tok, spec = common.load(inputs)
    editor = common.make_editor(method, inputs, model, tok, spec, stats)
    seconds, infos = [], []
    for r, s in enumerate(range(0, len(requests), batch)):
        t0 = time.perf_counter()
        info = editor.edit_batch(requests[s : s + batch], r)
        seconds.append(time.perf_counter() - t0)
        infos.append(info)
    return {"seconds": sum(seconds), "batch_seconds": seconds, "infos": infos}


def run(inputs: common.Inputs, n_edits: int = N_EDITS, batch: int = BATCH, repeats: int = 2, log=print) -> dict:
    common.limit_threads(inputs.threads)
    requests = common.stream(inputs, n_edits)
    stats = common.load_stats(inputs)
    runs = {"memit": [], "nse": []}
    for _ in range(repeats):
        for method in runs:
            runs[method].append(edit_run(method, inputs, requests, stats, batch))
    best = {m: min(v, key=lambda r: r["seconds"]) for m, v in runs.items()}
    ratio = best["nse"]["seconds"] / best["memit"]["seconds"]
    passes = [i["passes"] for i in best["nse"]["infos"]]
    log(f"  nse_vs_memit: MEMIT {best['memit']['seconds']:.2f} s, NSE {best['nse']['seconds']:.2f} s, "
        f"ratio {ratio:.2f}, NSE passes per batch {passes}")
    return {
        "description": f"{n_edits} edits in batches of {batch}, fresh model per run, only edit_batch timed; "
                       f"min of {repeats} alternating runs per method",
        "n_edits": n_edits, "batch_size": batch, "repeats": repeats,
        "memit_seconds": [round(r["seconds"], 4) for r in runs["memit"]],
        "nse_seconds": [round(r["seconds"], 4) for r in runs["nse"]],
        "memit_batch_seconds": [round(s, 4) for s in best["memit"]["batch_seconds"]],
        "nse_batch_seconds": [round(s, 4) for s in best["nse"]["batch_seconds"]],
        "ratio_nse_to_memit": round(ratio, 3), "aim_ratio_at_most": AIM,
        "nse_passes_per_batch": passes,
        "nse_edited_per_pass": [i["edited_per_pass"] for i in best["nse"]["infos"]],
    }


def summary(result: dict) -> list[list[str]]:
    return [[
        "nse_vs_memit",
        f"NSE / MEMIT time, {result['n_edits']} edits in batches of {result['batch_size']} "
        f"(NSE passes per batch {result['nse_passes_per_batch']})",
        f"{result['ratio_nse_to_memit']:.2f}x", f"<= {result['aim_ratio_at_most']}x",
    ]]
