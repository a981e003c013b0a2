"""Evaluation speed: the shared scorer against the reference scorer, same records, same run.

Times the CounterFact evaluation (efficacy / generalization / specificity and their
magnitudes, no generation) or, with `--kind zsre`, the ZsRE token accuracies, of the first
`--n` records of a benchmark file on one model, twice per repeat and interleaved so that
load on a shared machine hits both alike:

- reference: `reference=True`, one row per (prompt, target) pair, `batch_size` rows per
  forward, full-vocabulary logits at every position (the scorer before prompt sharing);
- shared: the default, each prompt once for both targets, logits only at scored positions,
  batches of `token_budget` tokens.

A second pair of rows adds the hidden-state probe of the same records, as a run does on the
unedited model (evaluation then `hidden_states`, against one pass that returns both). Prints
seconds per record, the ratio, the largest metric and NLL differences between the two
scorers, and writes the figures to `benchmarks/results/eval_speed-[zsre-]<host>.json`.

    python benchmarks/eval_speed.py --model /root/.cache/seqedit-models/smollm2-135m \\
        --records ../shared/data/counterfact/counterfact_subset_union.json --n 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common

DEFAULT_MODEL = "/root/.cache/seqedit-models/smollm2-135m"
DEFAULT_RECORDS = "../shared/data/counterfact/counterfact_subset_union.json"
SUMMARY_KEYS = {
    "counterfact": ("efficacy", "efficacy_magnitude", "generalization", "generalization_magnitude", "specificity",
                    "specificity_magnitude", "rewrite_acc", "paraphrase_acc", "neighborhood_acc"),
    "zsre": ("efficacy", "generalization", "specificity"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory (default: {DEFAULT_MODEL})")
    p.add_argument("--records", default=DEFAULT_RECORDS, help=f"edit records (default: {DEFAULT_RECORDS})")
    p.add_argument("--kind", default="counterfact", choices=("counterfact", "zsre"), help="schema of --records")
    p.add_argument("--n", type=int, default=20, help="records evaluated (default: 20)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each scorer (default: 2)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward of the reference scorer (default: 64)")
    p.add_argument("--token-budget", type=int, default=None, help="tokens per forward of the shared scorer "
                   "(default: the library's)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    return p.parse_args(argv)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(args) -> dict:
    common.limit_threads(args.threads)
    machine = common.machine()  # the load average before the timed work
    import numpy as np

    from seqedit.data import load_records
    from seqedit.evaluate.counterfact import evaluate_counterfact
    from seqedit.evaluate.zsre import _rows_of, evaluate_zsre
    from seqedit.evaluate.hidden import hidden_states
    from seqedit.evaluate.packed import DEFAULT_TOKEN_BUDGET
    from seqedit.models.arch import spec_for
    from seqedit.models.load import load_model

    model_dir, records_path = common.resolve(args.model), common.resolve(args.records)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"eval_speed: no model at {model_dir} (no config.json); pass --model")
    if not records_path.is_file():
        raise SystemExit(f"eval_speed: no records file {records_path}; pass --records")
    model, tok = load_model(str(model_dir), dtype="float32", device="cpu")
    records = load_records(records_path, args.kind, limit=args.n)
    evaluate = evaluate_counterfact if args.kind == "counterfact" else evaluate_zsre
    budget = args.token_budget or DEFAULT_TOKEN_BUDGET
    n = len(records)

    def reference():
        return evaluate(model, tok, records, batch_size=args.batch_size, reference=True)

    def shared():
        return evaluate(model, tok, records, token_budget=budget)

    def reference_probe():
        out = reference()
        return out, hidden_states(model, tok, records, args.batch_size)

    def shared_probe():
        out = evaluate(model, tok, records, token_budget=budget, hidden_probe=n)
        return out, out.pop("hidden")

    # Tokens through the trunk (padding included) and positions unembedded, per scorer.
    spec = spec_for(model)
    counts = {"tokens": 0, "logit_positions": 0}

    def count_tokens(module, args, kwargs):
        counts["tokens"] += kwargs["input_ids"].numel() if "input_ids" in kwargs else args[0].numel()

    def count_logits(module, args, output):
        counts["logit_positions"] += output.shape[:-1].numel()

    spec.trunk(model).register_forward_pre_hook(count_tokens, with_kwargs=True)
    spec.head(model).register_forward_hook(count_logits)
    work = {}
    for name, fn in (("reference", reference), ("shared", shared)):
        counts.update(tokens=0, logit_positions=0)
        fn()  # also the warm-up: first-call allocations and lazy imports, untimed
        work[name] = dict(counts)
    times = {"reference": [], "shared": [], "reference + probe": [], "shared + probe": []}
    outs = {}
    for _ in range(args.repeats):
        for name, fn in (("reference", reference), ("shared", shared), ("reference + probe", reference_probe),
                         ("shared + probe", shared_probe)):
            seconds, outs[name] = _timed(fn)
            times[name].append(seconds)

    ref, new = outs["reference"], outs["shared"]
    metric_diff = max(abs(ref["summary"][k] - new["summary"][k]) for k in SUMMARY_KEYS[args.kind]
                      if ref["summary"][k] is not None)
    if args.kind == "counterfact":
        nll_diff = max(abs(a - b) for er, en in zip(ref["per_record"], new["per_record"])
                       for which in ("nll_new", "nll_true") for kind in er[which]
                       for a, b in zip(er[which][kind], en[which][kind]))
        n_rows = sum(1 + len(r.paraphrase_prompts) + len(r.neighborhood_prompts) for r in records)
    else:  # token hits only: 0/1 per answer token
        nll_diff = None
        n_rows = sum(len(_rows_of(r)) for r in records)
    (_, h_ref), (_, h_new) = outs["reference + probe"], outs["shared + probe"]
    hidden_diff = max(float(np.abs(h_ref[k] - h_new[k]).max()) for k in h_ref)
    return {
        "machine": machine, "kind": args.kind, "model": str(model_dir), "records": str(records_path), "n_records": n,
        "prompts": n_rows, "threads": args.threads, "batch_size": args.batch_size, "token_budget": budget,
        "work": work, "seconds": times, "seconds_per_record": {k: min(v) / n for k, v in times.items()},
        "max_metric_diff": metric_diff, "max_nll_diff": nll_diff, "max_hidden_diff": hidden_diff,
        "per_record_equal": ref["per_record"] == new["per_record"],
        "summary_reference": ref["summary"], "summary_shared": new["summary"],
    }


def table(result: dict) -> list[str]:
    per, n, work = result["seconds_per_record"], result["n_records"], result["work"]
    body = []
    for old, new in (("reference", "shared"), ("reference + probe", "shared + probe")):
        for name in (old, new):
            w = work.get(name)
            body.append([name, f"{per[name]:.3f}", f"{per[old] / per[name]:.2f}",
                         f"{w['tokens'] / n:.0f}" if w else "", f"{w['logit_positions'] / n:.0f}" if w else ""])
    return common.format_table(["scorer", "s / record (best of repeats)", "speed-up", "tokens / record",
                                "logit positions / record"], body)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    lines = table(result)
    lines.append(f"{result['n_records']} records, {result['prompts']} prompts, {result['threads']} thread(s), "
                 f"reference batch {result['batch_size']} rows, shared budget {result['token_budget']} tokens")
    nll = "" if result["max_nll_diff"] is None else f"NLL {result['max_nll_diff']:.2e}, "
    lines.append(f"largest difference: metric {result['max_metric_diff']:.2e} (×100 scale), {nll}"
                 f"hidden state {result['max_hidden_diff']:.2e}; per-record entries equal: {result['per_record_equal']}")
    lines.append(common.machine_line(result["machine"]))
    print("\n".join(lines))
    kind = "" if result["kind"] == "counterfact" else f"{result['kind']}-"
    out = Path(__file__).resolve().parent / "results" / f"eval_speed-{kind}{common.host()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
