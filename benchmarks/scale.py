"""Scale: seconds per edit and peak memory of every method on models of the papers' dimensions.

    python benchmarks/scale.py [--arch NAME ...] [--layers N] [--batch B] [--methods a,b]
                               [--stats-samples N] [--stats-length T] [--device auto|cpu|cuda]
                               [--threads N] [--out FILE]

Random-initialised models with the real widths of GPT2-XL (n_embd 1600, n_inner 6400, 25 heads,
vocabulary 50257, 48 layers), Llama3-8B (hidden 4096, intermediate 14336, 32 heads, 8 key-value
heads, vocabulary 128256, 32 layers) and, on request, GPT-J-6B, built offline from
transformers configs. On a CUDA device they have every layer (in the paper config's dtype), and
both run by default. On the CPU they have `--layers` blocks (default 1, float32) and only GPT2-XL
runs by default (a check with `--batch 2` took 11 minutes and at most 3 GiB per process on 2
busy cores); the widths, and so the d_ff x d_ff
statistics, solves and projections of the MEMIT-family methods, keep their real size, which
makes Llama3 on a CPU (`--arch llama3-8b`) take minutes per method and up to about 16 GiB. Layer indices of the hyperparameters
(config/hparams/<method>/<arch>.yaml) and of the statistics (config/paper/<arch>.yaml) are moved
down by one common shift so that the last edited layer is the model's last; a model that has
every layer keeps them as they are.

What is timed, each in a fresh process (peak memory is per process):
- `stats`: `collect_second_moments` over `--stats-samples` synthetic texts of `--stats-length`
  tokens for the paper config's layers (tokens per second); its file feeds the method runs.
- one process per method: the editor is built with the method's hyperparameters for the
  architecture, then `--batches` batches of `--batch` synthetic requests are edited in
  sequence; only `edit_batch` is timed (editor construction is reported apart).
Peak memory: getrusage's peak RSS on the CPU; torch.cuda.max_memory_allocated on a GPU (the
peak RSS is reported too).

The tokenizer is a byte-level BPE trained on the synthetic texts, padded with filler tokens
to the model's vocabulary so every id the model can produce decodes. Statistics from fewer
tokens than d_ff are rank-deficient; they then get a ridge of 1e-3 times their mean diagonal
so the closed-form solves stay defined (the timings do not depend on it). These are timings,
not results: the model is random and the edits mean nothing.

Prints a table and writes the figures, the settings and the machine to
benchmarks/results/scale-<hostname>.json (`--out` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

MARK = "SCALE-RESULT "
# The papers' models: transformers config of the full model, and the config and hyperparameter
# file names in this repository.
ARCHS = {
    "gpt2-xl": {
        "model_type": "gpt2",
        "config": dict(n_embd=1600, n_inner=6400, n_head=25, vocab_size=50257, n_positions=1024, n_layer=48),
        "layers_key": "n_layer",
    },
    "llama3-8b": {
        "model_type": "llama",
        "config": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       num_hidden_layers=32, rms_norm_eps=1e-5),
        "layers_key": "num_hidden_layers",
    },
    "gpt-j-6b": {
        "model_type": "gptj",
        "config": dict(n_embd=4096, n_inner=16384, n_head=16, rotary_dim=64, vocab_size=50400, n_positions=2048,
                       n_layer=28),
        "layers_key": "n_layer",
    },
}
DEFAULT_ARCHS = {"gpu": ("gpt2-xl", "llama3-8b"), "cpu": ("gpt2-xl",)}  # Llama3 widths on a CPU: on request
CPU_LAYERS = 1


# --- synthetic inputs ------------------------------------------------------------------------------
def _word(rng: random.Random) -> str:
    syllables = ["ka", "lo", "ver", "mi", "tan", "sol", "ru", "den", "pa", "quo", "ni", "bel", "tor", "ash"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()


TEMPLATES = ["{} was born in", "{} works for", "{} is a citizen of", "The mother tongue of {} is", "{} plays the"]


def requests(n: int, seed: int = 0):
    """`n` synthetic requests (unique subjects, one of five templates, a new and a true object)."""
    from seqedit.data.records import EditRequest

    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        subject = f"{_word(rng)} {_word(rng)}"
        if subject in seen:
            continue
        seen.add(subject)
        out.append(EditRequest(case_id=len(out), prompt=TEMPLATES[len(out) % len(TEMPLATES)], subject=subject,
                               target_new=_word(rng), target_true=_word(rng)))
    return out


def stats_texts(n: int, n_words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 1)
    return [" ".join(_word(rng).lower() for _ in range(n_words)) + "." for _ in range(n)]


def tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE trained on the synthetic texts, padded with filler tokens to `vocab_size`."""
    from seqedit.core.templates import SEED_WORDS
    from seqedit.models.tokenizer import train_tokenizer

    texts = [r.query + " " + r.target_new for r in requests(500, seed)] + stats_texts(200, 30, seed)
    texts += list(SEED_WORDS) + list(TEMPLATES)
    tok = train_tokenizer(texts, vocab_size=2000)
    tok.add_tokens([f"<f{i}>" for i in range(vocab_size - len(tok))])
    return tok


# --- the model -----------------------------------------------------------------------------------
def build_model(arch: str, n_layers: int, dtype: str, device: str, seed: int = 0):
    """A random model of `arch` with `n_layers` blocks, built on `device` in `dtype`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from seqedit.models.load import DTYPES

    spec = ARCHS[arch]
    cfg = AutoConfig.for_model(spec["model_type"], **{**spec["config"], spec["layers_key"]: n_layers},
                               bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPES[dtype])
    return model.eval()


def full_layers(arch: str) -> int:
    return ARCHS[arch]["config"][ARCHS[arch]["layers_key"]]


def layer_shift(arch: str, n_layers: int) -> int:
    """How far the paper config's stats layers move down so the last one is the model's last."""
    top = max(paper_config(arch)["stats"]["layers"])
    return max(0, top - (n_layers - 1))


def move_layers(layers, shift: int, n_layers: int):
    if layers is None:
        return None
    return sorted({min(max(int(l) - shift, 0), n_layers - 1) for l in layers})


def paper_config(arch: str) -> dict:
    import yaml

    return yaml.safe_load((common.ROOT / "config" / "paper" / f"{arch}.yaml").read_text())


def method_hparams(method: str, arch: str, n_layers: int):
    """The method's config for `arch`, its layer indices moved to fit `n_layers`."""
    from seqedit.config import read_config
    from seqedit.registry import build_config, get_method

    path = common.ROOT / "config" / "hparams" / method / f"{arch}.yaml"
    values = read_config(path)
    shift = layer_shift(arch, n_layers)
    if "layers" in values:
        values["layers"] = move_layers(values["layers"], shift, n_layers)
    if "v_loss_layer" in values:
        values["v_loss_layer"] = n_layers - 1
    return build_config(get_method(method)[0], values, str(path.relative_to(common.ROOT)))


# --- measurements (each in its own process) ------------------------------------------------------
def peak_memory(device: str) -> dict:
    out = {"peak_rss_mb": round(common.peak_rss_mb(), 1)}
    if device.startswith("cuda"):
        import torch

        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure_stats(args) -> dict:
    import torch

    from seqedit.core.stats import collect_second_moments
    from seqedit.models.arch import spec_for

    tok = tokenizer(ARCHS[args.arch]["config"]["vocab_size"])
    t0 = time.perf_counter()
    model = build_model(args.arch, args.layers, args.dtype, args.device)
    build_s = time.perf_counter() - t0
    spec = spec_for(model)
    layers = move_layers(paper_config(args.arch)["stats"]["layers"], layer_shift(args.arch, args.layers), args.layers)
    # a word is at least one token: stats_length words fill stats_length tokens
    texts = stats_texts(args.stats_samples, args.stats_length)
    collect_second_moments(model, tok, spec, texts[:1], layers, args.stats_length, 1, progress=False)  # warm-up
    sync(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    stats = collect_second_moments(model, tok, spec, texts, layers, args.stats_length, args.stats_batch,
                                   progress=False)
    sync(args.device)
    seconds = time.perf_counter() - t0
    d_ff = spec.d_ff(model)
    if stats.count < d_ff:  # rank-deficient: a ridge keeps the method runs' solves defined
        for layer, mom2 in stats.mom2.items():
            mom2 += torch.eye(d_ff, dtype=mom2.dtype) * (1e-3 * float(mom2.diagonal().mean()) + 1e-12)
        stats.meta["ridge"] = 1e-3
    stats.save(args.stats_file)
    return {
        "what": "stats", "arch": args.arch, "layers": layers, "n_texts": stats.meta["n_texts"], "n_tokens": stats.count,
        "max_length": args.stats_length, "batch_size": args.stats_batch, "seconds": round(seconds, 3),
        "tokens_per_second": round(stats.count / seconds, 1), "model_build_seconds": round(build_s, 2),
        "d_ff": d_ff, "accumulator_mb": round(len(layers) * d_ff * d_ff * 8 / 2**20, 1), **peak_memory(args.device),
    }


def measure_method(args) -> dict:
    import torch

    from seqedit.core.stats import LayerStats
    from seqedit.models.arch import spec_for
    from seqedit.registry import get_method
    from seqedit.repro import seed_everything

    tok = tokenizer(ARCHS[args.arch]["config"]["vocab_size"])
    model = build_model(args.arch, args.layers, args.dtype, args.device)
    spec = spec_for(model)
    stats = LayerStats.load(args.stats_file)
    hp = method_hparams(args.method, args.arch, args.layers)
    reqs = requests(args.batch * args.batches)
    seed_everything(0)
    t0 = time.perf_counter()
    editor = get_method(args.method)[1](hp, model, tok, spec, stats, seed=0)
    sync(args.device)
    setup_s = time.perf_counter() - t0
    before = peak_memory(args.device)
    batch_s = []
    for r in range(args.batches):
        t0 = time.perf_counter()
        editor.edit_batch(reqs[r * args.batch : (r + 1) * args.batch], r)
        sync(args.device)
        batch_s.append(time.perf_counter() - t0)
    n = args.batch * args.batches
    after = peak_memory(args.device)
    return {
        "what": "method", "arch": args.arch, "method": args.method, "layers": getattr(hp, "layers", None),
        "batch_size": args.batch, "n_batches": args.batches, "n_edits": n,
        "edit_seconds": round(sum(batch_s), 3), "seconds_per_edit": round(sum(batch_s) / n, 4),
        "batch_seconds": [round(s, 3) for s in batch_s], "setup_seconds": round(setup_s, 3),
        **after, **{f"{k}_before_edits": v for k, v in before.items()},
        "finite_weights": bool(all(torch.isfinite(p).all() for p in model.parameters())),
    }


# --- orchestration ---------------------------------------------------------------------------------
def worker_args(args, arch: str, what: str, stats_file: Path) -> list[str]:
    return ["--worker", what, "--arch", arch, "--layers", str(args.layers_for[arch]), "--dtype", args.dtype_for[arch],
            "--device", args.device, "--batch", str(args.batch), "--batches", str(args.batches),
            "--stats-samples", str(args.stats_samples), "--stats-length", str(args.stats_length_for[arch]),
            "--stats-batch", str(args.stats_batch_for[arch]), "--stats-file", str(stats_file),
            *(["--threads", str(args.threads)] if args.threads else [])]


def run_worker(argv: list[str], threads: int | None) -> dict:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], capture_output=True, text=True,
                          env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"error": tail[0]}


def resolve_settings(args) -> None:
    """Per architecture: layers, dtype and the statistics' length and batch (GPU: the paper config's)."""
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("scale: --device cuda, but torch sees no CUDA device")
    gpu = args.device.startswith("cuda")
    args.arch = args.arch or list(DEFAULT_ARCHS["gpu" if gpu else "cpu"])
    args.layers_for, args.dtype_for, args.stats_length_for, args.stats_batch_for = {}, {}, {}, {}
    for arch in args.arch:
        paper = paper_config(arch)
        args.layers_for[arch] = args.layers or (full_layers(arch) if gpu else CPU_LAYERS)
        args.dtype_for[arch] = args.dtype or (paper["model"]["dtype"] if gpu else "float32")
        args.stats_length_for[arch] = args.stats_length or (paper["stats"]["max_length"] if gpu else 64)
        args.stats_batch_for[arch] = args.stats_batch or (paper["stats"]["batch_size"] if gpu else 8)


def machine(device: str) -> dict:
    import torch

    m = common.machine()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        m["gpu"] = props.name
        m["gpu_memory_mb"] = round(props.total_memory / 2**20)
    return m


def table(rows: list[dict]) -> list[str]:
    head = ["arch", "layers", "what", "s/edit", "seconds", "setup s", "peak MiB", "notes"]
    body = []
    for r in rows:
        peak = r.get("peak_cuda_allocated_mb", r.get("peak_rss_mb"))
        if "error" in r:
            body.append([r["arch"], r.get("n_layers", "-"), r.get("method", "stats"), "-", "-", "-", "-",
                         f"FAILED: {r['error']}"])
        elif r["what"] == "stats":
            body.append([r["arch"], r["n_layers"], "stats", "-", f"{r['seconds']:.2f}", "-", f"{peak:.0f}",
                         f"{r['n_tokens']} tokens, {r['tokens_per_second']:.0f} tok/s, layers {r['layers']}"])
        else:
            body.append([r["arch"], r["n_layers"], r["method"], f"{r['seconds_per_edit']:.3f}", f"{r['edit_seconds']:.2f}",
                         f"{r['setup_seconds']:.2f}", f"{peak:.0f}", f"layers {r['layers']}"])
    return common.format_table(head, body)


def default_out() -> Path:
    import socket

    host = re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname() or "") or "local"
    return common.ROOT / "benchmarks" / "results" / f"scale-{host}.json"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", choices=list(ARCHS),
                   help="repeatable (default: gpt2-xl and llama3-8b on a GPU, gpt2-xl on the CPU)")
    p.add_argument("--layers", type=int, default=None,
                   help=f"transformer blocks (default: all on a GPU, {CPU_LAYERS} on the CPU)")
    p.add_argument("--batch", type=int, default=10, help="edits per batch (default 10)")
    p.add_argument("--batches", type=int, default=1, help="sequential batches per method (default 1)")
    p.add_argument("--methods", default=",".join(common.METHODS), help="comma-separated (default: all 8)")
    p.add_argument("--stats-samples", type=int, default=64, help="texts of the statistics pass (default 64)")
    p.add_argument("--stats-length", type=int, default=None,
                   help="tokens per text (default: the paper config's max_length on a GPU, 64 on the CPU)")
    p.add_argument("--stats-batch", type=int, default=None,
                   help="texts per forward (default: the paper config's on a GPU, 8 on the CPU)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="default: the paper config's on a GPU, float32 on the CPU")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/scale-<hostname>.json)")
    # worker mode (one measurement in this process)
    p.add_argument("--worker", choices=["stats", *common.METHODS], help=argparse.SUPPRESS)
    p.add_argument("--stats-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch", "batches", "stats_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.layers is not None and args.layers < 1:
        p.error("--layers must be >= 1")
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(common.METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(common.METHODS)}")
    return args


def worker(args) -> None:
    if args.threads:
        common.limit_threads(args.threads)
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    (args.arch,) = args.arch
    if args.worker == "stats":
        result = measure_stats(args)
    else:
        args.method = args.worker
        result = measure_method(args)
    print(MARK + json.dumps(result), flush=True)


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    resolve_settings(args)
    if args.threads:
        common.limit_threads(args.threads)
    m = machine(args.device)
    print(f"machine: {common.machine_line(m)}" + (f", {m['gpu']}" if "gpu" in m else ""), flush=True)
    out = Path(args.out) if args.out else default_out()
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seqedit-scale-") as tmp:
        for arch in args.arch:
            n_layers = args.layers_for[arch]
            stats_file = Path(tmp) / f"{arch}.pt"
            print(f"{arch}: {n_layers} layer(s), {args.dtype_for[arch]} on {args.device}: statistics ...", flush=True)
            r = run_worker(worker_args(args, arch, "stats", stats_file), args.threads)
            rows.append({"arch": arch, "n_layers": n_layers, "what": "stats", **r})
            if "error" in r:
                print(f"  stats FAILED: {r['error']}", flush=True)
                continue
            print(f"  stats: {r['seconds']:.2f} s for {r['n_tokens']} tokens", flush=True)
            for method in args.methods:
                r = run_worker(worker_args(args, arch, method, stats_file), args.threads)
                rows.append({"arch": arch, "n_layers": n_layers, "method": method, "what": "method", **r})
                if "error" in r:
                    print(f"  {method}: FAILED: {r['error']}", flush=True)
                else:
                    print(f"  {method}: {r['seconds_per_edit']:.3f} s/edit, setup {r['setup_seconds']:.2f} s", flush=True)
    total = round(time.perf_counter() - t_start, 1)
    lines = [f"Machine: {common.machine_line(m)}" + (f", {m['gpu']}" if "gpu" in m else ""), "",
             f"scale: one process per row; {args.batches} batch(es) of {args.batch} synthetic edits per method "
             f"(only edit_batch timed); peak memory = "
             + ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"), "",
             *table(rows), "", f"wall seconds: {total}"]
    print()
    print("\n".join(lines))
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "stats_file", "out")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "settings": settings, "rows": rows, "total_seconds": total,
                               "table": lines}, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
