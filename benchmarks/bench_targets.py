"""`targets`: batched target optimisation against the per-request reference mode.

`optimize_targets` (core/targets.py) is called directly on one batch of requests from the
seed's edit stream, with MEMIT's testbed hyperparameters (config/hparams/memit/<name>.yaml):
once with `mode="batched"` (all requests in one padded forward/backward per step) and once
with `mode="per_request"` (one optimisation per request, the reference). Both start from the
same unedited model and the same context templates. Reported: the wall-time ratio and how far
the two sets of vectors z lie apart (max absolute element difference and max relative row
difference ‖z_b − z_p‖ / ‖z_p‖), and whether every request took the same number of steps.
"""

from __future__ import annotations

import time

import common

BATCH = 50
AIM = 5.0  # speed-up aimed for


def run(inputs: common.Inputs, batch: int = BATCH, repeats: int = 2, log=print) -> dict:
    from seqedit.core.targets import optimize_targets
    from seqedit.core.templates import generate_context_templates

    common.limit_threads(inputs.threads)
    cfg = common.hparams("memit", inputs)
    requests = common.stream(inputs, batch)
    model, tok, spec = common.load(inputs)
    templates = generate_context_templates(model, tok, cfg.n_context_templates, cfg.context_template_length,
                                           seed=inputs.seed)
    tcfg = cfg.target_config()

    def once(mode):
        t0 = time.perf_counter()
        z, zlog = optimize_targets(model, tok, spec, requests, templates, tcfg, mode=mode)
        return time.perf_counter() - t0, z, zlog

    optimize_targets(model, tok, spec, requests[:2], templates, tcfg, mode="batched")  # warm-up
    times = {"batched": [], "per_request": []}
    out = {}
    for _ in range(repeats):  # alternate, so a load change on the machine hits both modes
        for mode in times:
            t, z, zlog = once(mode)
            times[mode].append(t)
            out[mode] = (z, zlog)
    zb, zp = out["batched"][0].double(), out["per_request"][0].double()
    abs_diff = float((zb - zp).abs().max())
    rel_diff = float(((zb - zp).norm(dim=1) / zp.norm(dim=1)).max())
    same_steps = out["batched"][1]["steps"] == out["per_request"][1]["steps"]
    tb, tp = min(times["batched"]), min(times["per_request"])
    log(f"  targets: batched {tb:.2f} s, per-request {tp:.2f} s, speed-up {tp / tb:.1f}x, max |dz| {abs_diff:.2e}")
    return {
        "description": f"optimize_targets on {batch} requests, MEMIT {inputs.hparams} hyperparameters; "
                       f"min of {repeats} alternating runs per mode",
        "n_requests": batch, "repeats": repeats,
        "target_config": {k: getattr(tcfg, k) for k in tcfg.__dataclass_fields__},
        "n_context_templates": sum(len(g) for g in templates),
        "batched_seconds": [round(t, 4) for t in times["batched"]],
        "per_request_seconds": [round(t, 4) for t in times["per_request"]],
        "speedup": round(tp / tb, 3), "aim_speedup_at_least": AIM,
        "max_abs_diff": abs_diff, "max_rel_diff": rel_diff,
        "z_norm_mean": float(zp.norm(dim=1).mean()),
        "same_steps": same_steps,
        "steps_total": {m: sum(out[m][1]["steps"]) for m in out},
    }


def summary(result: dict) -> list[list[str]]:
    return [
        ["targets", f"batched vs per-request speed-up ({result['n_requests']} requests)",
         f"{result['speedup']:.1f}x", f">= {result['aim_speedup_at_least']:.0f}x"],
        ["targets", "max abs difference z batched vs per-request (max relative row difference)",
         f"{result['max_abs_diff']:.1e} ({result['max_rel_diff']:.1e})", "float rounding (relative <= 1e-5)"],
    ]
