"""Shared pieces of the benchmarks: input paths, loading, hyperparameters, machine description.

The benchmarks measure the library on the trained testbed; they are not tests and never fail
on a figure. Every entry point calls `limit_threads` first, so timings on a shared machine are
taken with a known number of torch threads.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import resource
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root

DEFAULT_MODEL = "results/testbed/testbed/model"
DEFAULT_STATS = "results/testbed/stats/mom2.pt"
DEFAULT_RECORDS = "data/world/counterfact.json"
DEFAULT_CORPUS = "data/world/corpus.txt"
WORKFLOW_HINT = "snakemake --cores all results/testbed/stats/mom2.pt"


def _registered_methods() -> tuple[str, ...]:
    from seqedit.registry import available_methods

    return tuple(available_methods())


METHODS = _registered_methods()  # every registered method, in the study's order


class MissingInput(SystemExit):
    pass


@dataclass
class Inputs:
    model: Path
    stats: Path
    records: Path
    corpus: Path
    kind: str = "counterfact"
    hparams: str = "testbed"  # config/hparams/<method>/<hparams>.yaml
    threads: int = 1
    seed: int = 0

    def as_dict(self) -> dict:
        return {k: str(v) for k, v in self.__dict__.items()}

    def as_args(self) -> list[str]:
        """The same inputs as command-line options (for the worker subprocesses)."""
        return [
            "--model", str(self.model), "--stats", str(self.stats), "--records", str(self.records),
            "--corpus", str(self.corpus), "--kind", self.kind, "--hparams", self.hparams,
            "--threads", str(self.threads), "--seed", str(self.seed),
        ]


def resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (ROOT / p if not p.exists() else p.resolve())


def check_inputs(inputs: Inputs, needed=("model", "stats", "records", "corpus")) -> None:
    """Stop with one clear message if any input the selected benchmarks need is missing."""
    missing = []
    if "model" in needed and not (inputs.model / "config.json").is_file():
        missing.append(f"model {inputs.model} (no config.json)")
    for label, p in (("stats", inputs.stats), ("records", inputs.records), ("corpus", inputs.corpus)):
        if label in needed and not p.is_file():
            missing.append(f"{label} {p}")
    if missing:
        raise MissingInput(
            "benchmarks: missing input(s): " + "; ".join(missing) + ".\n"
            f"Build the testbed and its statistics first:  {WORKFLOW_HINT}\n"
            "or point the benchmarks at existing files with --model / --stats / --records / --corpus."
        )


def add_input_options(p) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory (default: {DEFAULT_MODEL})")
    p.add_argument("--stats", default=DEFAULT_STATS, help=f"layer statistics file (default: {DEFAULT_STATS})")
    p.add_argument("--records", default=DEFAULT_RECORDS, help=f"edit records (default: {DEFAULT_RECORDS})")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"text corpus for the stats benchmark (default: {DEFAULT_CORPUS})")
    p.add_argument("--kind", default="counterfact", choices=("counterfact", "zsre"), help="schema of --records")
    p.add_argument("--hparams", default="testbed", help="hyperparameter file name: config/hparams/<method>/<NAME>.yaml")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--seed", type=int, default=0)


def inputs_from_args(args) -> Inputs:
    return Inputs(
        model=resolve(args.model), stats=resolve(args.stats), records=resolve(args.records),
        corpus=resolve(args.corpus), kind=args.kind, hparams=args.hparams, threads=args.threads, seed=args.seed,
    )


def limit_threads(n: int) -> None:
    """Fix torch's intra-op threads and silence the weight-loading progress bars."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    torch.set_num_threads(n)
    transformers.utils.logging.disable_progress_bar()


# --- library glue --------------------------------------------------------------------------------
def load(inputs: Inputs):
    """(model, tokenizer, spec) freshly loaded from disk: an unedited copy every call."""
    from seqedit.models.arch import spec_for
    from seqedit.models.load import load_model

    model, tok = load_model(str(inputs.model), dtype="float32", device="cpu")
    return model, tok, spec_for(model)


def load_stats(inputs: Inputs):
    from seqedit.core.stats import LayerStats

    return LayerStats.load(inputs.stats)


def stream(inputs: Inputs, n: int):
    """The first `n` requests of the seed's edit stream (the runner's order)."""
    from seqedit.data import load_records
    from seqedit.data.stream import edit_stream

    records = load_records(inputs.records, inputs.kind)
    if n > len(records):
        raise SystemExit(f"benchmarks: {n} edits requested but {inputs.records} holds {len(records)} records")
    return [r.request for r in edit_stream(records, n, inputs.seed, shuffle=True)]


def hparams(method: str, inputs: Inputs, **overrides):
    """The method's config from config/hparams/<method>/<name>.yaml, with overrides."""
    from seqedit.config import read_config
    from seqedit.registry import build_config, get_method

    config_cls, _ = get_method(method)
    path = ROOT / "config" / "hparams" / method / f"{inputs.hparams}.yaml"
    values = {**read_config(path), **overrides}
    return build_config(config_cls, values, f"{path.relative_to(ROOT)}")


def make_editor(method: str, inputs: Inputs, model, tok, spec, stats, **overrides):
    from seqedit.registry import get_method
    from seqedit.repro import seed_everything

    _, editor_cls = get_method(method)
    seed_everything(inputs.seed)
    return editor_cls(hparams(method, inputs, **overrides), model, tok, spec, stats, seed=inputs.seed)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def format_table(head: list[str], body: list[list[str]]) -> list[str]:
    """A Markdown table (padded columns) as a list of lines."""
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in body)]


# --- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host() -> str:
    """This machine's name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname() or "") or "local"


def machine() -> dict:
    try:
        import torch
    except ImportError:  # the pipeline benchmark may run outside the package's environment
        torch = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:
        load1 = None
    return {
        "hostname": socket.gethostname() or "local",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min_at_start": load1,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def machine_line(m: dict) -> str:
    return (f"{m['cpu_model']}, {m['cpus_usable']}/{m['cpu_count']} cores usable, torch {m['torch']}, "
            f"{m['torch_threads']} torch thread(s), load {m['load_average_1min_at_start']} at start, {m['date']}")
