"""Real model: one round of edits on a pretrained model, fast against reference target optimisation.

    python benchmarks/real_model.py MODEL_DIR --records FILE [--methods a,b] [--modes fast,reference]
                                    [--reference-methods a,b] [--batch 10] [--hparams llama3-8b]
                                    [--v-loss-layer 29] [--stats FILE] [--stats-samples N]
                                    [--threads 1] [--seed 0] [--out FILE]

MODEL_DIR is a Hugging Face model directory (e.g. SmolLM2-135M-Instruct, Llama layout), the
records a CounterFact file of the ROME schema. For every method (default MEMIT, AlphaEdit, NSE,
NMKE) and every target mode (`fast`, the default of `optimize_targets`; `reference`, the full
forward/backward of every prompt of the batch per step; `per_request`, the same one request at a
time, as the reference implementations run it, which holds one request's activations where
`reference` holds the batch's), a fresh process loads the unedited model, builds the
editor with `config/hparams/<method>/<hparams>.yaml` (`target_mode` and `v_loss_layer`
overridden where the method has them; KN's `attribution_mode` is `fast` in the fast mode and
`reference` in the others; FT-L and KNE have one code path and are timed in the fast mode only) and edits the
first `--batch` requests of the seed's edit stream once. Only
`edit_batch` is timed, split by wrapping the library functions it calls (exclusive time, nested
calls counted once):
- targets: `optimize_targets`;
- keys: `collect_keys` and `hidden_at_subject` (the key and residual forwards);
- solve: `solve_ridge`, `solve_projected`;
- attribution: KN's integrated gradients (`KNEditor.layer_scores`), NMKE's neuron trace and
  log-probability gains;
- rest: everything else in `edit_batch` (NSE's neuron selection, the edits' bookkeeping, ...).
Peak memory is the process's peak RSS (`getrusage`) after the edit.

Also printed: the z of the two modes compared (max relative row difference ‖z_f − z_r‖ / ‖z_r‖,
and whether every request took the same number of steps; for a method without target vectors,
such as KN, the weight updates: max over edited matrices of ‖ΔW_f − ΔW_r‖ / ‖ΔW_r‖), KN's FLOPs
per edit of its attribution (fast and reference), and FLOPs per request and step of the
target optimisation, counted from the batch's real token counts and the model's weight shapes:
- floor: what depends on δ and is read, the positions from each prompt's subject-last token
  through its last read position (the KL prompts: that token only) through the blocks above L,
  plus the unembedding at the target positions and the KL position; forward and
  backward (the weights are frozen, so the backward computes input gradients only, about the
  forward's cost);
- fast: what the fast mode computes (the floor with each group of rows padded to its widest
  row, attending to the group's padded prefix);
- reference: the padded full forward of every position through every layer with the
  unembedding everywhere, and its backward from the logits down to block L+1.
Per token and block a matmul costs 2 FLOPs per weight; attention adds 4·d per attended key.

The layer statistics E[kkᵀ] the closed-form solves need are collected first (`--stats-samples`
texts from the records' generation and attribute prompts, the methods' layers) unless `--stats`
gives a file; they only make the solves defined, the timings do not depend on their content.

Prints a table and writes every figure, the settings and the machine to
benchmarks/results/real-<hostname>.json (`--out` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

MARK = "REAL-RESULT "
DEFAULT_METHODS = ("memit", "alphaedit", "nse", "nmke")
MODES = ("fast", "reference", "per_request")
SHARED = Path(os.environ.get("SEQEDIT_SHARED_DATA", common.ROOT.parent / "shared" / "data"))
DEFAULT_RECORDS = SHARED / "counterfact" / "counterfact_subset_union.json"

# Where each part of edit_batch lives: (module, attribute) pairs wrapped by a timer.
PARTS = {
    "targets": [("seqedit.methods.memit", "optimize_targets"), ("seqedit.methods.alphaedit", "optimize_targets"),
                ("seqedit.methods.nse", "optimize_targets"), ("seqedit.methods.rome", "optimize_targets")],
    "keys": [("seqedit.core.spread", "collect_keys"), ("seqedit.core.spread", "hidden_at_subject"),
             ("seqedit.methods.memit", "collect_keys"), ("seqedit.methods.nse", "hidden_at_subject"),
             ("seqedit.methods.rome", "collect_keys")],
    "solve": [("seqedit.methods.memit", "solve_ridge"), ("seqedit.methods.nse", "solve_ridge"),
              ("seqedit.methods.alphaedit", "solve_projected")],
    "attribution": [("seqedit.methods.kn", "KNEditor.layer_scores"), ("seqedit.methods.nmke", "trace_neurons"),
                    ("seqedit.methods.nmke", "neuron_logprob_gain")],
}


# --- timing ---------------------------------------------------------------------------------------
class PartTimer:
    """Exclusive wall time per part: time spent in a nested timed call counts for the inner part."""

    def __init__(self):
        self.seconds = {p: 0.0 for p in PARTS}
        self.calls = {p: 0 for p in PARTS}
        self.stack: list[list] = []  # [part, start, time of nested timed calls]
        self.first_z = None
        self.first_log = None

    def wrap(self, part: str, fn):
        def timed(*args, **kwargs):
            frame = [part, time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                out = fn(*args, **kwargs)
            finally:
                self.stack.pop()
                total = time.perf_counter() - frame[1]
                self.seconds[part] += total - frame[2]
                self.calls[part] += 1
                if self.stack:
                    self.stack[-1][2] += total
            if part == "targets" and self.first_z is None:
                self.first_z, self.first_log = out[0].detach().clone(), out[1]
            return out

        return timed

    def install(self) -> None:
        import importlib

        for part, places in PARTS.items():
            for module, attr in places:
                owner = importlib.import_module(module)
                *path, name = attr.split(".")  # "Class.method" wraps the method on its class
                for a in path:
                    owner = getattr(owner, a)
                if hasattr(owner, name):
                    setattr(owner, name, self.wrap(part, getattr(owner, name)))


# --- FLOPs ----------------------------------------------------------------------------------------
def block_matmul_flops(model, spec) -> int:
    """Per token and block: 2 FLOPs per weight of the block's matrices (layer 0's)."""
    block = model.get_submodule(spec.block_name(0))
    return 2 * sum(p.numel() for p in block.parameters() if p.dim() == 2)


def target_flops(model, tok, spec, requests, templates, layer: int) -> dict:
    """FLOPs per request and step of the target optimisation: floor, fast mode, reference mode."""
    from seqedit.core.prompts import build_batch
    from seqedit.core.targets import length_groups
    from seqedit.core.templates import fill_context, flatten

    prompts, subjects, targets = [], [], []
    for r in requests:
        for ctx in flatten(templates):
            prompts += [fill_context(ctx, r.prompt)]
            subjects += [r.subject]
            targets += [r.new_text]
    prompts += ["{} is a"] * len(requests)
    subjects += [r.subject for r in requests]
    targets += [None] * len(requests)
    batch = build_batch(tok, prompts, subjects, targets, teacher_force_all=False)
    d, n_layers = spec.d_model(model), spec.n_layers(model)
    vocab = spec.unembed(model).shape[0]
    per_tok = block_matmul_flops(model, spec)
    above = n_layers - 1 - layer
    n_read = sum(len(t) for t in batch.target_ids) + len(requests)  # target positions + KL positions
    unembed = 2 * d * vocab
    width = max(batch.lengths)
    # Slots a row needs: from p through its last read position (the KL rows: p only).
    need = [max(t) - p + 1 if t else 1 for t, p in zip(batch.target_pos, batch.subject_idx)]
    floor = fast = 0
    for k, p in zip(need, batch.subject_idx):
        keys = sum(p + j + 1 for j in range(k))  # causal: slot j attends p + j + 1 keys
        floor += above * (k * per_tok + 4 * d * keys)
    for group in length_groups(need):  # the fast mode runs each group padded to its widest row
        k = max(need[i] for i in group)
        prefix = max(batch.subject_idx[i] for i in group)
        fast += above * len(group) * (k * per_tok + 4 * d * k * (prefix + k))
    floor, fast = floor + n_read * unembed, fast + n_read * unembed
    rows = len(batch.lengths)
    ref_fwd = rows * width * (n_layers * (per_tok + 4 * d * width) + unembed)
    ref_bwd = rows * width * (above * (per_tok + 4 * d * width) + unembed)
    n = len(requests)
    return {
        "rows": rows, "padded_width": width, "groups": len(length_groups(need)), "needed_slots": sum(need),
        "real_tokens": sum(batch.lengths), "suffix_tokens": sum(a - b for a, b in zip(batch.lengths, batch.subject_idx)),
        "read_positions": n_read, "layer": layer, "blocks_above": above,
        "gflop_per_request_step": {
            "floor": round(2 * floor / n / 1e9, 3),
            "fast": round(2 * fast / n / 1e9, 3),
            "reference": round((ref_fwd + ref_bwd) / n / 1e9, 3),
        },
    }


def kn_flops(model, tok, spec, requests, editor) -> dict:
    """FLOPs per edit of KN's attribution, from the scored prompts' real lengths.

    Per scored prompt (T tokens; one per true-target token) and searched layer l, m points:
    - fast: one no-grad forward of the prompt through every block, then each point runs the last
      position through the blocks above l (forward and backward) and the unembedding there;
    - reference: each point a full forward of the T tokens with the unembedding everywhere, and
      the backward from the logits down to block l.
    The backward computes input gradients only (frozen weights), about the forward's cost.
    Attention adds 4·d per attended key.
    """
    from seqedit.core.prompts import encode, encode_target

    cfg = editor.config
    d, n_layers = spec.d_model(model), spec.n_layers(model)
    per_tok, unembed = block_matmul_flops(model, spec), 2 * d * spec.unembed(model).shape[0]
    m, layers = cfg.steps, editor.layers
    fast = ref = passes = 0
    for r in requests:
        prompt = encode(tok, r.query)
        truth = encode_target(tok, r.true_text) if r.true_text is not None else [0]
        for t in range(len(truth)):
            T = len(prompt) + (0 if cfg.multi_token == "prompt_last" else t)
            passes += 1
            block_fwd = per_tok + 4 * d * (T + 1) / 2  # a block's cost per token, mean causal keys
            fast += T * n_layers * block_fwd
            ref += T * n_layers * block_fwd + T * unembed  # the reference's capture forward
            for l in layers:
                above = n_layers - 1 - l
                fast += 2 * m * (above * (per_tok + 4 * d * T) + unembed)
                ref += m * (T * n_layers * block_fwd + T * unembed) + m * (T * (above + 1) * block_fwd + T * unembed)
    n = len(requests)
    return {"passes": passes, "layers": len(layers), "points": m,
            "gflop_per_edit": {"fast": round(fast / n / 1e9, 3), "reference": round(ref / n / 1e9, 3)},
            "flop_per_edit": {"fast": fast / n, "reference": ref / n}}


# --- one measurement (worker process) ------------------------------------------------------------
def make_inputs(args) -> common.Inputs:
    return common.Inputs(model=Path(args.model), stats=Path(args.stats_file or ""), records=Path(args.records),
                         corpus=Path(args.records), kind="counterfact", hparams=args.hparams,
                         threads=args.threads, seed=args.seed)


def has_modes(method: str) -> bool:
    """Whether a method's config offers the modes timed here (`target_mode` or KN's `attribution_mode`)."""
    from dataclasses import fields

    from seqedit.registry import get_method

    return bool({f.name for f in fields(get_method(method)[0])} & {"target_mode", "attribution_mode"})


def overrides(args, method: str, mode: str) -> dict:
    """The target settings this run overrides, for the methods that optimise target vectors
    (FT-L, KN and KNE have none, and run as their files say)."""
    from dataclasses import fields

    from seqedit.registry import get_method

    out = {"target_mode": mode, "v_loss_layer": args.v_loss_layer,
           "attribution_mode": "fast" if mode == "fast" else "reference"}
    if args.steps is not None:
        out["v_num_grad_steps"] = args.steps
    known = {f.name for f in fields(get_method(method)[0])}
    return {k: v for k, v in out.items() if k in known}


def measure(args) -> dict:
    import torch
    from seqedit.core.stats import LayerStats

    inputs = make_inputs(args)
    common.limit_threads(inputs.threads)
    timer = PartTimer()
    timer.install()
    requests = common.stream(inputs, args.batch)
    stats = LayerStats.load(args.stats_file)
    model, tok, spec = common.load(inputs)
    t0 = time.perf_counter()
    editor = common.make_editor(args.worker, inputs, model, tok, spec, stats, **overrides(args, args.worker, args.mode))
    optimises_targets = hasattr(editor.config, "target_config")  # not FT-L, KN, KNE
    templates = editor.context_templates() if optimises_targets else None  # sampled before the timed edit
    setup_s = time.perf_counter() - t0
    rss_before = common.peak_rss_mb()
    w0 = None if optimises_targets else {n: p.detach().clone() for n, p in model.named_parameters()
                                         if n in set(editor.param_names())}
    t0 = time.perf_counter()
    editor.edit_batch(requests, 0)
    total = time.perf_counter() - t0
    rss_after = common.peak_rss_mb()
    split = {p: round(s, 3) for p, s in timer.seconds.items()}
    split["rest"] = round(total - sum(timer.seconds.values()), 3)
    result = {
        "method": args.worker, "mode": args.mode, "n_edits": len(requests),
        "edit_seconds": round(total, 3), "seconds_per_edit": round(total / len(requests), 4), "split_seconds": split,
        "calls": timer.calls, "setup_seconds": round(setup_s, 3),
        "peak_rss_mb": round(rss_after, 1), "peak_rss_before_edit_mb": round(rss_before, 1),
        "target_steps": timer.first_log["steps"] if timer.first_log else None,
        "target_loss": timer.first_log["loss"] if timer.first_log else None,
    }
    if args.z_file and timer.first_z is not None:
        torch.save(timer.first_z, args.z_file)
    elif args.z_file and w0 is not None:  # no target vectors: the weight updates are compared instead
        torch.save({n: p.detach() - w0[n] for n, p in model.named_parameters() if n in w0}, args.z_file)
    if args.mode == "fast" and optimises_targets:
        result["flops"] = target_flops(model, tok, spec, requests, templates, editor.config.target_config().layer)
    if args.mode == "fast" and args.worker == "kn":
        result["flops"] = kn_flops(model, tok, spec, requests, editor)
    return result


def run_worker(args, method: str, mode: str, stats_file: str, z_file: str) -> dict:
    argv = [str(Path(__file__).resolve()), args.model, "--records", args.records, "--hparams", args.hparams,
            "--batch", str(args.batch), "--v-loss-layer", str(args.v_loss_layer), "--threads", str(args.threads),
            "--seed", str(args.seed), "--worker", method, "--mode", mode, "--stats-file", stats_file,
            "--z-file", z_file]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise SystemExit(f"real_model: worker {method}/{mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# --- statistics -----------------------------------------------------------------------------------
def stats_texts(records_path: str, n: int, seed: int) -> list[str]:
    from seqedit.data import load_records

    texts = []
    for rec in load_records(records_path, "counterfact"):
        texts += list(rec.generation_prompts) + list(rec.attribute_prompts)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def collect_stats(args, layers: list[int], out: str) -> dict:
    from seqedit.core.stats import collect_second_moments

    inputs = make_inputs(args)
    model, tok, spec = common.load(inputs)
    texts = stats_texts(args.records, args.stats_samples, args.seed)
    t0 = time.perf_counter()
    stats = collect_second_moments(model, tok, spec, texts, layers, progress=True)
    seconds = time.perf_counter() - t0
    stats.save(out)
    return {"texts": stats.meta["n_texts"], "tokens": stats.count, "layers": layers, "seconds": round(seconds, 2)}


# --- the whole run --------------------------------------------------------------------------------
def table(rows: list[dict]) -> list[str]:
    head = ["method", "mode", "s/edit", "targets s", "keys s", "solve s", "attribution s", "rest s", "peak RSS MiB",
            "target steps"]
    body = []
    for r in rows:
        s = r["split_seconds"]
        body.append([r["method"], r["mode"], f"{r['seconds_per_edit']:.2f}", f"{s['targets']:.1f}", f"{s['keys']:.1f}",
                     f"{s['solve']:.1f}", f"{s.get('attribution', 0.0):.1f}", f"{s['rest']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     str(sum(r["target_steps"] or [])) if r["target_steps"] else "-"])
    return common.format_table(head, body)


def compare(rows: list[dict], z_files: dict) -> list[dict]:
    """Each method's fast run against each of its other modes (reference, per_request) timed."""
    import torch

    out = []
    by = {(r["method"], r["mode"]): r for r in rows}
    for method in dict.fromkeys(r["method"] for r in rows):
        if (method, "fast") not in by:
            continue
        fast = by[(method, "fast")]
        zf = torch.load(z_files[(method, "fast")])
        for other in MODES[1:]:
            if (method, other) not in by:
                continue
            ref = by[(method, other)]
            zr = torch.load(z_files[(method, other)])
            c = {"method": method, "against": other,
                 "speedup_edit": round(ref["edit_seconds"] / fast["edit_seconds"], 2)}
            for part in ("targets", "attribution"):  # the parts the modes compute differently
                if fast["split_seconds"].get(part, 0) > 0:
                    c[f"speedup_{part}"] = round(ref["split_seconds"][part] / fast["split_seconds"][part], 2)
            if isinstance(zf, dict):  # weight updates (no target vectors)
                c["update_max_rel_diff"] = max(float((zf[n].double() - zr[n].double()).norm() / zr[n].double().norm())
                                               for n in zf if float(zr[n].norm()) > 0)
            else:
                zf_, zr_ = zf.double(), zr.double()
                c["z_max_rel_diff"] = float(((zf_ - zr_).norm(dim=1) / zr_.norm(dim=1)).max())
                c["same_steps"] = fast["target_steps"] == ref["target_steps"]
            c["peak_rss_mb"] = {"fast": fast["peak_rss_mb"], other: ref["peak_rss_mb"]}
            out.append(c)
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="Hugging Face model directory")
    p.add_argument("--records", default=str(DEFAULT_RECORDS), help=f"CounterFact records (default: {DEFAULT_RECORDS})")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated (default: memit,alphaedit,nse,nmke)")
    p.add_argument("--modes", default="fast,reference",
                   help="target modes to time: fast, reference, per_request (default: fast,reference)")
    p.add_argument("--reference-methods", default=None,
                   help="methods also timed in the modes other than fast (default: every method of --methods)")
    p.add_argument("--batch", type=int, default=10, help="edits in the round (default 10)")
    p.add_argument("--hparams", default="llama3-8b", help="config/hparams/<method>/<NAME>.yaml (default llama3-8b)")
    p.add_argument("--v-loss-layer", type=int, default=29, help="v_loss_layer override (default 29, SmolLM2's last)")
    p.add_argument("--steps", type=int, default=None, help="v_num_grad_steps override (default: the hparams file's)")
    p.add_argument("--stats", default=None, help="layer statistics file to reuse (default: collect them first)")
    p.add_argument("--stats-samples", type=int, default=300, help="texts of the statistics pass (default 300)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/real-<hostname>.json)")
    p.add_argument("--worker", choices=list(common.METHODS), help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    p.add_argument("--stats-file", help=argparse.SUPPRESS)
    p.add_argument("--z-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        p.error(f"model directory {args.model} holds no config.json")
    if not Path(args.records).is_file():
        p.error(f"records file {args.records} does not exist")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        print(MARK + json.dumps(measure(args)), flush=True)
        return
    common.limit_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in methods if m not in common.METHODS] + [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"real_model: unknown method or mode {bad}")
    ref_methods = methods if args.reference_methods is None else args.reference_methods.split(",")
    inputs = make_inputs(args)
    layers = sorted({l for m in methods for l in (common.hparams(m, inputs).layers or [])})  # KN: null = all
    m0 = common.machine()
    print(f"real_model: {args.model}, batch {args.batch}, hparams {args.hparams}; {common.machine_line(m0)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        stats_info = None
        stats_file = args.stats
        if stats_file is None:
            stats_file = str(Path(tmp) / "mom2.pt")
            stats_info = collect_stats(args, layers, stats_file)
            print(f"  stats: {stats_info['texts']} texts, {stats_info['tokens']} tokens, layers {layers}, "
                  f"{stats_info['seconds']:.1f} s", flush=True)
        rows, z_files = [], {}
        for method in methods:
            for mode in modes:
                if mode != "fast" and method not in ref_methods:
                    continue
                if mode != "fast" and not has_modes(method):
                    print(f"  {method:9s} {mode:9s} skipped: {method} has one code path (no target_mode, "
                          "no attribution_mode)", flush=True)
                    continue
                z_files[(method, mode)] = str(Path(tmp) / f"z-{method}-{mode}.pt")
                r = run_worker(args, method, mode, stats_file, z_files[(method, mode)])
                s = r["split_seconds"]
                print(f"  {method:9s} {mode:9s} {r['edit_seconds']:8.1f} s  (targets {s['targets']:.1f}, "
                      f"keys {s['keys']:.1f}, solve {s['solve']:.1f}, attribution {s['attribution']:.1f}, rest {s['rest']:.1f})  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
                rows.append(r)
                write(args, m0, stats_info, rows, [], {}, [])  # partial results survive an interrupted run
        comparison = compare(rows, z_files)
    flops = {}  # per method: its own context templates and layer set the count
    for r in rows:
        flops.setdefault(r["method"], r.get("flops"))
    flops = {m: f for m, f in flops.items() if f}
    lines = table(rows)
    print("\n".join(lines))
    for c in comparison:
        parts = "".join(f", {p} {c[f'speedup_{p}']:.2f}x" for p in ("targets", "attribution") if f"speedup_{p}" in c)
        same = (f"z max relative difference {c['z_max_rel_diff']:.1e}, same steps: {c['same_steps']}" if "z_max_rel_diff"
                in c else f"weight update max relative difference {c['update_max_rel_diff']:.1e}")
        print(f"  {c['method']}: {c['against']} / fast edit time {c['speedup_edit']:.2f}x{parts}; {same}")
    for method, f in flops.items():
        if "gflop_per_edit" in f:  # KN's attribution
            g = f["gflop_per_edit"]
            print(f"  {method}: attribution FLOPs per edit ({f['passes']} scored prompts, {f['layers']} layers x "
                  f"{f['points']} points): fast {g['fast']} GFLOP, reference {g['reference']} GFLOP "
                  f"(reference / fast {g['reference'] / g['fast']:.1f}x)")
            continue
        g = f["gflop_per_request_step"]
        print(f"  {method}: target step FLOPs per request (layer {f['layer']}, {f['blocks_above']} blocks above, "
              f"{f['rows']} rows): floor {g['floor']} GFLOP, fast {g['fast']} GFLOP, reference {g['reference']} GFLOP "
              f"(reference / floor {g['reference'] / g['floor']:.1f}x)")
    print(f"  written: {write(args, m0, stats_info, rows, comparison, flops, lines)}")


def write(args, m0, stats_info, rows, comparison, flops, lines) -> Path:
    out = Path(args.out) if args.out else common.ROOT / "benchmarks" / "results" / f"real-{common.host()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "mode", "stats_file", "z_file")}
    out.write_text(json.dumps({"settings": settings, "machine": m0, "machine_at_end": common.machine(),
                               "stats": stats_info, "runs": rows, "comparison": comparison, "flops": flops,
                               "table": lines}, indent=2))
    return out


if __name__ == "__main__":
    main()
