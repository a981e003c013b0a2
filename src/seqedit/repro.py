"""Seeding and provenance: what produced a result file, and how to produce it again."""

from __future__ import annotations

import hashlib
import json
import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("seqedit", "torch", "transformers", "tokenizers", "datasets", "numpy", "snakemake")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_hash(cfg: dict, length: int = 16) -> str:
    """sha256 of the canonical JSON of a config (key order does not matter), first `length` hex."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def git_commit(path: str | Path | None = None) -> dict:
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(device: str = "cpu") -> dict:
    """The processor a result was computed on (its float rounding is the machine's): CPU model,
    architecture, logical cores, and the GPU's name when `device` is a CUDA device."""
    import os
    import sys

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    out = {"cpu": cpu or platform.processor() or None, "arch": platform.machine(), "cores": os.cpu_count()}
    torch = sys.modules.get("torch")
    if str(device).startswith("cuda") and torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def provenance(cfg: dict) -> dict:
    model = cfg.get("model")
    device = (model.get("device") if isinstance(model, dict) else None) or "cpu"
    return {"config_hash": config_hash(cfg), "git": git_commit(), "versions": versions(), "machine": machine(str(device))}


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temporary file, then rename), so a reader never sees half a file."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
