"""The sequential protocol: N edits in batches of B on one model, never restored.

After every `eval_every` batches the records edited so far (a seeded subsample of at most
`curve_max_records`) are evaluated, giving curves over the number of edits; after the last
batch all edited records are evaluated. The state needed to continue (edited weights, the
editor's sequential state, the round, RNG states, the curve so far) is checkpointed after
every `checkpoint_every` batches with an atomic rename, so a killed run resumes where it
stopped and a half-written checkpoint is never read. The checkpoint is removed when the
run completes.

Outputs in `out_dir`: metrics.json (deterministic: config, hash, git commit, versions,
final metrics), curve.json (points, weight drift and the editor's info per round),
per_record.json, hidden.npz (final-layer hidden states of the first evaluated records
before and after the run, read from the same passes as the curve's first point and the final
evaluation, so the unedited model is run once) and timing.json (seconds per round, peak memory).
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqedit.data.records import EditRecord
from seqedit.evaluate.capability import matrix_norms
from seqedit.repro import config_hash, provenance, write_json

CURVE_METRICS = ("efficacy", "generalization", "specificity", "fluency", "consistency",
                 "efficacy_gen", "generalization_gen", "specificity_gen", "perplexity", "heldout_accuracy")


@dataclass
class RunConfig:
    n_edits: int = 200
    batch_size: int = 20
    eval_every: int = 2  # batches between curve points
    curve_max_records: int = 100
    checkpoint_every: int = 1
    shuffle: bool = True  # edit a seeded sample of the records (data.stream); False = the first n_edits

    def __post_init__(self):
        for name in ("n_edits", "batch_size", "eval_every", "curve_max_records", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size > self.n_edits:
            raise ValueError(f"run.batch_size ({self.batch_size}) is larger than run.n_edits ({self.n_edits})")


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def _save_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves either the old or the new file, never half of one


def _jsonable(value, depth: int = 0):
    """The JSON-representable part of an editor's info dict (tensors and masks dropped)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 4:
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items() if not torch.is_tensor(v)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value if not torch.is_tensor(v)]
    if isinstance(value, (np.integer, np.floating)):
        return _jsonable(value.item(), depth)
    return None


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mb": round(rss_mb, 1), "peak_gpu_mb": None if gpu is None else round(gpu, 1)}


def _curve_point(n_edits: int, summary: dict) -> dict:
    return {"n_edits": n_edits, **{k: summary.get(k) for k in CURVE_METRICS}}


def run_sequential(
    model,
    tokenizer,
    records: list[EditRecord],
    editor,
    run_cfg: RunConfig,
    eval_cfg: dict,
    out_dir: str | Path,
    config: dict,
    seed: int = 0,
    progress: bool = True,
    evaluate=None,
    stop_after_rounds: int | None = None,
    hidden_probe: bool = True,
) -> dict:
    """Run the protocol; return the metrics dict also written to metrics.json.

    `stop_after_rounds` ends the process-level loop early (for resume tests) without
    writing final outputs, as a kill would.
    """
    if evaluate is None:
        from seqedit.evaluate import evaluate_records as evaluate
    if run_cfg.n_edits > len(records):
        raise ValueError(f"run.n_edits ({run_cfg.n_edits}) exceeds the {len(records)} records available")
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint" / "state.pt"
    chash = config_hash(config)
    records = records[: run_cfg.n_edits]
    batches = [records[s : s + run_cfg.batch_size] for s in range(0, len(records), run_cfg.batch_size)]
    params = {n: p for n, p in model.named_parameters() if n in set(editor.param_names())}
    w0 = {n: p.detach().clone() for n, p in params.items()}

    start, curve, drift, timing, rounds, before = 0, [], [], [], [], None
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["config_hash"] == chash:
            with torch.no_grad():
                for n, t in state["params"].items():
                    params[n].copy_(t)
            editor.load_state_dict(state["editor"])
            _set_rng_state(state["rng"])
            start, curve, drift, timing = state["round"], state["curve"], state["drift"], state["timing"]
            rounds, before = state.get("rounds", []), state.get("hidden_before")
            print(f"resumed from {ckpt} after round {start} of {len(batches)}")
        else:
            print(f"ignoring checkpoint {ckpt}: it belongs to config {state['config_hash']}, not {chash}")
    else:
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    probe_records = records[: run_cfg.curve_max_records]

    def evaluate_probed(subset: list[EditRecord]) -> tuple[dict, dict]:
        """Evaluate `subset`, whose first records are `probe_records`, and take the probe's hidden
        states from the same passes; an evaluation that returns none gets its own probe pass."""
        cfg = eval_cfg if eval_cfg.get("reference") else {**eval_cfg, "hidden_probe": len(probe_records)}
        result = evaluate(model, tokenizer, subset, cfg)
        states = result.pop("hidden", None)
        if states is None:
            from seqedit.evaluate.hidden import hidden_states

            states = hidden_states(model, tokenizer, probe_records, eval_cfg.get("batch_size", 64))
        return result, states

    def evaluate_prefix(n_done: int) -> dict:
        done = records[:n_done]
        if len(done) > run_cfg.curve_max_records:
            done = random.Random(seed * 100003 + n_done).sample(done, run_cfg.curve_max_records)
        return evaluate(model, tokenizer, done, eval_cfg)["summary"]

    if start == 0 and not curve:  # the unedited model, on the records to be edited: one pass for curve and probe
        if hidden_probe:
            first, before = evaluate_probed(probe_records)
        else:
            first = evaluate(model, tokenizer, probe_records, eval_cfg)
        curve.append(_curve_point(0, first["summary"]))

    bar = tqdm(range(start, len(batches)), desc=f"{editor.name} rounds", disable=not progress, initial=start,
               total=len(batches))
    for r in bar:
        t0 = time.perf_counter()
        info = editor.edit_batch([rec.request for rec in batches[r]], r)
        timing.append({"round": r, "seconds": time.perf_counter() - t0, "n_edits": len(batches[r])})
        rounds.append({"round": r, **_jsonable({k: v for k, v in (info or {}).items() if k != "delta_norm"})})
        n_done = sum(len(b) for b in batches[: r + 1])
        drift.append({
            "round": r, "n_edits": n_done,
            "weight_drift": {n: float((p.detach() - w0[n]).float().norm()) for n, p in params.items()},
            "update_norm": {str(k): v for k, v in (info.get("delta_norm") or {}).items()},
            "weight_norm": matrix_norms(params),
        })
        last = r == len(batches) - 1
        if (r + 1) % run_cfg.eval_every == 0 and not last:
            curve.append(_curve_point(n_done, evaluate_prefix(n_done)))
            bar.set_postfix(efficacy=f"{curve[-1]['efficacy']:.1f}", specificity=f"{curve[-1]['specificity']:.1f}")
        if (r + 1) % run_cfg.checkpoint_every == 0 and not last:
            _save_checkpoint(ckpt, {
                "config_hash": chash, "round": r + 1, "params": {n: p.detach().cpu() for n, p in params.items()},
                "editor": editor.state_dict(), "rng": _rng_state(), "curve": curve, "drift": drift, "timing": timing,
                "rounds": rounds, "hidden_before": before,
            })
        if stop_after_rounds is not None and r + 1 >= stop_after_rounds and not last:
            return {}

    if hidden_probe and before is not None:
        final, after = evaluate_probed(records)
    else:
        final = evaluate(model, tokenizer, records, eval_cfg)
    curve.append(_curve_point(len(records), final["summary"]))
    metrics = {
        "method": editor.name, "seed": seed, "n_edits": len(records), "batch_size": run_cfg.batch_size,
        "final": final["summary"], "provenance": provenance(config), "config": config,
    }
    write_json(out_dir / "curve.json",
               {"method": editor.name, "seed": seed, "points": curve, "drift": drift, "rounds": rounds,
                "weight_norm_before": matrix_norms(w0)})
    write_json(out_dir / "per_record.json", final["per_record"])
    if hidden_probe and before is not None:
        arrays = {f"{when}_{k}": v for when, d in (("before", before), ("after", after)) for k, v in d.items()}
        tmp = out_dir / "hidden.tmp.npz"
        np.savez(tmp, case_id=np.array([r.request.case_id for r in probe_records]), **arrays)
        os.replace(tmp, out_dir / "hidden.npz")
    total = sum(t["seconds"] for t in timing)
    write_json(out_dir / "timing.json", {"edit_seconds": total, "seconds_per_edit": total / len(records),
                                          "rounds": timing, "run_config": asdict(run_cfg), **peak_memory_mb()})
    write_json(out_dir / "metrics.json", metrics)
    if ckpt.exists():
        ckpt.unlink()
    if ckpt.parent.is_dir() and not any(ckpt.parent.iterdir()):
        ckpt.parent.rmdir()
    return metrics
