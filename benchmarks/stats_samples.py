"""Layer statistics at several sample counts: time, and how far E[kkᵀ] and what it feeds have settled.

    python benchmarks/stats_samples.py MODEL_DIR [--counts 125,250,500,1000,2000] [--layers 1,2,3,4,5]
                                       [--texts FILE] [--records FILE] [--batch 10] [--hparams smollm2-135m]
                                       [--edits N] [--edit-counts a,b] [--threads 1] [--seed 0] [--out FILE]

The texts are the study's statistics source for a pretrained model (`stats.source: generated`):
seeded samples of the model's own writing from prompts that name no entity, with the settings of
`config/smollm2.yaml` (64 sampled tokens, top-k 50, top-p 0.95, batches of 128), the largest count
of them. They are generated once and kept in `--texts` (default
benchmarks/results/stats-texts-<model>-<n>-seed<seed>.json), so a rerun only times the statistics.

The counts are nested prefixes of that sample. Each stretch between two counts goes through
`collect_second_moments` once and the sums add up, so the time at n is the cumulative time of
one pass over n texts. For every count n and layer, against the largest count N:
- `change_half`: ‖C_n − C_{n/2}‖_F / ‖C_n‖_F (what the study's stats stage records), where n/2
  is one of the counts;
- `diff_full`: ‖C_n − C_N‖_F / ‖C_N‖_F;
- `ridge`: the relative change of MEMIT's update map, ‖M_n − M_N‖_F / ‖M_N‖_F with
  M = (λ·C + K Kᵀ)⁻¹ K, K the keys of the first `--batch` requests of the seed's edit stream
  (bare prompts, no context templates) and λ the MEMIT hyperparameter file's
  `mom2_update_weight`. For residuals R with independent entries, ΔW = R Mᵀ moves by this
  fraction in expectation;
- `projector`: ‖P_n − P_N‖_F / ‖P_N‖_F for AlphaEdit's null-space projector (its hyperparameter
  file's threshold rule), and the projector's rank.

With `--edits N`, MEMIT (the hyperparameter file's settings) then edits the first N records of the
seed's stream in batches of 10 on a fresh model, once with the statistics of each of
`--edit-counts`, and the CounterFact metrics of the edited records are printed: whether what the
matrix still moves changes the edits.

The first stretch is also collected with the forward running through the whole model, as the
statistics pass did before it stopped after the deepest layer read; the two sums are compared.

Prints a table and writes every figure, the settings and the machine to
benchmarks/results/stats-<hostname>.json (`--out` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import common

SHARED_RECORDS = common.ROOT.parent / "shared" / "data" / "counterfact" / "counterfact_subset_union.json"


def load_texts(model, tok, path: Path, n: int, seed: int) -> tuple[list[str], float | None]:
    """The first n generated texts, from `path` when it holds them; generated (and kept) otherwise."""
    from seqedit.data.texts import GeneratedTextConfig, generated_texts

    if path.is_file():
        texts = json.loads(path.read_text())
        if len(texts) >= n:
            return texts[:n], None
    t0 = time.perf_counter()
    texts = generated_texts(model, tok, GeneratedTextConfig(batch_size=128), n, seed)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts))
    return texts, seconds


def collect(model, tok, spec, texts, layers, full_forward: bool = False):
    """(sums per layer, tokens, seconds) of one statistics pass; `full_forward` runs every layer."""
    import seqedit.core.stats as stats_mod

    saved = stats_mod.stop_after
    if full_forward:
        stats_mod.stop_after = lambda model, names: contextlib.nullcontext()
    try:
        t0 = time.perf_counter()
        st = stats_mod.collect_second_moments(model, tok, spec, texts, layers, max_length=64, batch_size=32,
                                              progress=False)
        seconds = time.perf_counter() - t0
    finally:
        stats_mod.stop_after = saved
    return st.mom2, st.count, seconds


def edit_with(inputs, stats, n_edits: int, batch: int = 10) -> dict:
    """CounterFact summary of the first `n_edits` records of the seed's stream after MEMIT edited
    them sequentially, in batches of `batch`, on a freshly loaded model with these statistics."""
    from seqedit.data import load_records
    from seqedit.data.stream import edit_stream
    from seqedit.evaluate.counterfact import evaluate_counterfact

    records = list(edit_stream(load_records(inputs.records, inputs.kind), n_edits, inputs.seed, shuffle=True))
    model, tok, spec = common.load(inputs)
    editor = common.make_editor("memit", inputs, model, tok, spec, stats)
    for round_, start in enumerate(range(0, n_edits, batch)):
        editor.edit_batch([r.request for r in records[start : start + batch]], round_)
    return evaluate_counterfact(model, tok, records)["summary"]


def rel(a, b) -> float:
    import torch

    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="Hugging Face model directory")
    p.add_argument("--counts", default="125,250,500,1000,2000", help="nested sample counts (default 125,...,2000)")
    p.add_argument("--layers", default="1,2,3,4,5", help="statistics layers (default 1,2,3,4,5: config/smollm2.yaml)")
    p.add_argument("--texts", default=None, help="generated texts kept between runs (JSON list)")
    p.add_argument("--records", default=str(SHARED_RECORDS), help="CounterFact records for the keys K")
    p.add_argument("--batch", type=int, default=10, help="requests whose keys K enter the ridge map (default 10)")
    p.add_argument("--hparams", default="smollm2-135m", help="config/hparams/<method>/<NAME>.yaml (default smollm2-135m)")
    p.add_argument("--edits", type=int, default=0,
                   help="also edit this many requests with MEMIT, in batches of 10, once with each of "
                        "--edit-counts' statistics, and evaluate the edited records (default 0: no edits)")
    p.add_argument("--edit-counts", default=None, help="counts whose statistics the edits use (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    common.limit_threads(args.threads)

    import torch
    from seqedit.core.keys import collect_keys
    from seqedit.core.projection import null_space_projector
    from seqedit.core.solve import solve_ridge
    from seqedit.core.stats import LayerStats

    counts = sorted({int(c) for c in args.counts.split(",")})
    if counts[0] < 1:
        raise SystemExit("stats_samples: every count must be >= 1")
    layers = sorted({int(l) for l in args.layers.split(",")})
    inputs = common.Inputs(model=common.resolve(args.model), stats=Path("-"), records=common.resolve(args.records),
                           corpus=Path("-"), hparams=args.hparams, threads=args.threads, seed=args.seed)
    common.check_inputs(inputs, needed=("model", "records"))
    model, tok, spec = common.load(inputs)
    texts_path = Path(args.texts) if args.texts else (
        common.ROOT / "benchmarks" / "results" / f"stats-texts-{inputs.model.name}-{counts[-1]}-seed{args.seed}.json")
    texts, gen_seconds = load_texts(model, tok, texts_path, counts[-1], args.seed)
    print(f"texts: {len(texts)} from {texts_path}" + (f" (generated in {gen_seconds:.0f} s)" if gen_seconds else " (kept)"))

    memit = common.hparams("memit", inputs)
    alpha = common.hparams("alphaedit", inputs)
    lam = float(memit.mom2_update_weight)
    mode = alpha.threshold_mode
    cut = float(alpha.nullspace_threshold if mode == "absolute" else alpha.nullspace_energy)
    requests = common.stream(inputs, args.batch)
    keys = {l: k.double() for l, k in collect_keys(model, tok, spec, layers, requests, [["{}"]]).items()}  # (d_ff, n)

    # Cumulative sums over nested prefixes.
    edit_counts = counts if args.edit_counts is None else sorted({int(c) for c in args.edit_counts.split(",")})
    if not set(edit_counts) <= set(counts):
        raise SystemExit(f"stats_samples: --edit-counts {edit_counts} must be among --counts {counts}")
    sums, tokens, seconds, points, kept = None, 0, 0.0, {}, {}
    prev = 0
    for n in counts:
        part, count, sec = collect(model, tok, spec, texts[prev:n], layers)
        if prev == 0:
            full, full_count, full_sec = collect(model, tok, spec, texts[:n], layers, full_forward=True)
            stop_check = {"texts": n, "tokens": count, "seconds_stopped": round(sec, 2), "seconds_full": round(full_sec, 2),
                          "speedup": round(full_sec / sec, 2), "same_count": full_count == count,
                          "max_rel_diff": max(rel(part[l], full[l]) for l in layers)}
            print(f"first {n} texts: stopped after layer {layers[-1]} {sec:.1f} s, whole model {full_sec:.1f} s "
                  f"({full_sec / sec:.2f}x), sums differ by {stop_check['max_rel_diff']:.1e} relative")
        sums = {l: part[l].clone() for l in layers} if sums is None else {l: sums[l] + part[l] for l in layers}
        tokens += count
        seconds += sec
        points[n] = {"tokens": tokens, "seconds": round(seconds, 2), "cov": {l: sums[l] / tokens for l in layers}}
        if args.edits and n in edit_counts:
            kept[n] = LayerStats(mom2={l: t.clone() for l, t in sums.items()}, count=tokens,
                                 meta={"layers": layers, "n_texts": n})
        prev = n
        print(f"n={n}: {tokens} tokens, {seconds:.1f} s cumulative")

    big = points[counts[-1]]["cov"]

    def ridge_map(cov, l):
        """(λC + KKᵀ)⁻¹K (d_ff, n): MEMIT's solve with the identity as residuals."""
        eye = torch.eye(keys[l].shape[1], dtype=torch.float64)
        return solve_ridge(keys[l], eye, cov, lam).T

    ref_map = {l: ridge_map(big[l], l) for l in layers}
    ref_proj = {l: null_space_projector(big[l], mode, cut) for l in layers}
    rows, out_points = [], []
    for n in counts:
        cov = points[n]["cov"]
        per = {}
        for l in layers:
            proj = null_space_projector(cov[l], mode, cut)
            per[l] = {
                "change_half": rel(cov[l], points[n // 2]["cov"][l]) if n // 2 in points else None,
                "diff_full": rel(cov[l], big[l]),
                "ridge": rel(ridge_map(cov[l], l), ref_map[l]),
                "projector": rel(proj, ref_proj[l]),
                "projector_rank": int(round(float(torch.trace(proj)))),
            }
        worst = {k: max(v[k] for v in per.values()) if all(v[k] is not None for v in per.values()) else None
                 for k in ("change_half", "diff_full", "ridge", "projector")}
        ranks = [per[l]["projector_rank"] for l in layers]
        out_points.append({"n": n, "tokens": points[n]["tokens"], "seconds": points[n]["seconds"],
                           "per_layer": per, "max": worst})
        fmt = lambda x: "-" if x is None else f"{x:.3f}"
        rows.append([str(n), str(points[n]["tokens"]), f"{points[n]['seconds']:.1f}",
                     f"{points[n]['tokens'] / max(points[n]['seconds'], 1e-9):.0f}", fmt(worst["change_half"]),
                     fmt(worst["diff_full"]), fmt(worst["ridge"]), fmt(worst["projector"]),
                     f"{min(ranks)}-{max(ranks)}"])
    head = ["texts", "tokens", "seconds", "tokens/s", "change n/2->n", "diff to N", "ridge map diff",
            "projector diff", "projector rank"]
    print("\n" + "\n".join(common.format_table(head, rows)))
    print(f"(largest over layers {layers}; N = {counts[-1]}; λ = {lam:g}; projector {mode} {cut:g})")

    edits = []
    for n, stats in kept.items():
        t0 = time.perf_counter()
        summary = edit_with(inputs, stats, args.edits)
        edits.append({"n": n, "summary": summary, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"MEMIT, {args.edits} edits with the statistics of {n} texts: efficacy {summary['efficacy']:.1f}, "
              f"generalization {summary['generalization']:.1f}, specificity {summary['specificity']:.1f} "
              f"({edits[-1]['seconds']:.0f} s)", flush=True)

    result = {"settings": vars(args) | {"lambda": lam, "projector": [mode, cut], "layers": layers, "counts": counts,
                                        "texts_file": str(texts_path), "generation_seconds": gen_seconds},
              "stop_check": stop_check, "points": out_points, "edits": edits, "machine": common.machine()}
    out = Path(args.out) if args.out else common.ROOT / "benchmarks" / "results" / f"stats-{common.host()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
