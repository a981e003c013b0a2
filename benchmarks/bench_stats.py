"""`stats`: layer statistics in one pass for all layers against one pass per layer.

`collect_second_moments` hooks every requested W_out in one forward per batch, so collecting
layers [0, 1, 2] together should cost about one pass, not three. Timed: one call with all
layers, and one call per layer (their mean is "one pass", their sum "a pass per layer");
both give bit-identical sums, which is checked. Then the accumulators' size for two corpus
sizes: Σ k kᵀ is one (d_ff × d_ff) float64 matrix per layer whatever the number of tokens,
so the stats object of 1000 and of 4000 texts should take the same bytes.

The testbed corpus has fewer lines than 4000; larger samples cycle through a seeded shuffle
of it (the cost depends on the tokens processed, not on whether lines repeat).
"""

from __future__ import annotations

import io
import random
import time

import common

LAYERS = [0, 1, 2]
N_TIMED = 4000
MEMORY_SIZES = (1000, 4000)
MAX_LENGTH, BATCH_SIZE = 64, 64  # the workflow's stats settings (config/config.yaml)


def texts(lines: list[str], n: int, seed: int) -> list[str]:
    from seqedit.core.stats import sample_texts

    lines = [l for l in lines if l.strip()]
    if n <= len(lines):
        return sample_texts(lines, n, seed)
    order = lines[:]
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def stats_bytes(stats) -> dict:
    tensors = sum(t.numel() * t.element_size() for t in stats.mom2.values())
    buf = io.BytesIO()
    import torch

    torch.save({"mom2": stats.mom2, "count": stats.count}, buf)
    return {"accumulator_bytes": tensors, "serialized_bytes": buf.getbuffer().nbytes}


def run(inputs: common.Inputs, n_texts: int = N_TIMED, layers=LAYERS, repeats: int = 2, log=print) -> dict:
    from seqedit.core.stats import collect_second_moments

    common.limit_threads(inputs.threads)
    model, tok, spec = common.load(inputs)
    lines = inputs.corpus.read_text().splitlines()
    sample = texts(lines, n_texts, inputs.seed)

    def collect(ls, sample=sample):
        t0 = time.perf_counter()
        s = collect_second_moments(model, tok, spec, sample, ls, MAX_LENGTH, BATCH_SIZE, progress=False)
        return time.perf_counter() - t0, s

    collect(layers, sample[:BATCH_SIZE])  # warm-up
    t_all, t_one = [], {l: [] for l in layers}
    for _ in range(repeats):  # alternate, so a load change on the machine hits both ways
        t, joint = collect(layers)
        t_all.append(t)
        single = {}
        for l in layers:
            t, s = collect([l])
            t_one[l].append(t)
            single[l] = s
    max_diff = max(float((joint.mom2[l] - single[l].mom2[l]).abs().max()) for l in layers)
    best_all = min(t_all)
    best_one = {l: min(v) for l, v in t_one.items()}
    mean_one = sum(best_one.values()) / len(layers)
    sum_one = sum(best_one.values())
    log(f"  stats: all layers {best_all:.2f} s, one layer {mean_one:.2f} s (mean), per-layer passes {sum_one:.2f} s")

    memory = []
    for n in MEMORY_SIZES:
        _, s = collect(layers, texts(lines, n, inputs.seed))
        memory.append({"n_texts": n, "n_tokens": s.count, **stats_bytes(s)})
    log("  stats: accumulator bytes " + ", ".join(f"{m['n_texts']} texts: {m['accumulator_bytes']}" for m in memory))
    return {
        "description": f"collect_second_moments over {n_texts} texts (max_length {MAX_LENGTH}, batch {BATCH_SIZE}); "
                       f"min of {repeats} alternating runs",
        "layers": list(layers), "n_texts": n_texts, "n_tokens": joint.count, "corpus_lines": len(lines),
        "all_layers_seconds": [round(t, 4) for t in t_all],
        "one_layer_seconds": {str(l): [round(t, 4) for t in v] for l, v in t_one.items()},
        "ratio_all_to_one_pass": round(best_all / mean_one, 3),
        "ratio_all_to_per_layer_passes": round(best_all / sum_one, 3),
        "aim_ratio_all_to_one_pass": "about 1",
        "max_abs_diff_joint_vs_single": max_diff,
        "memory": memory,
        "memory_identical": len({m["accumulator_bytes"] for m in memory}) == 1,
    }


def summary(result: dict) -> list[list[str]]:
    m = result["memory"]
    return [
        ["stats", f"one pass for layers {result['layers']} / one single-layer pass",
         f"{result['ratio_all_to_one_pass']:.2f}x", "about 1x"],
        ["stats", f"one pass for layers {result['layers']} / {len(result['layers'])} single-layer passes",
         f"{result['ratio_all_to_per_layer_passes']:.2f}x", f"about 1/{len(result['layers'])}"],
        ["stats", "max abs difference of the sums, one pass vs per layer", f"{result['max_abs_diff_joint_vs_single']:.1e}", "0"],
        ["stats", "accumulator bytes, " + " vs ".join(f"{x['n_texts']} texts ({x['n_tokens']} tokens)" for x in m),
         " vs ".join(str(x["accumulator_bytes"]) for x in m), "identical"],
    ]
