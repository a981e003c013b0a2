"""Layer statistics shared by the results folders of one model.

Each results folder (the study, and every tagged overlay on it: ZsRE, quick, long) sums its own
layer statistics, though they depend only on the model and the statistics settings, not on the
records edited. On SmolLM2-135M that is 375 s of 2 cores (4,000 texts) and a 94 MB file per folder.

A statistics file records what it was summed from (`meta["inputs"]`, by `stats_inputs`): the
stage config (statistics and model loading settings), the digest of the model's files, the
digest of the corpus file where it read one, and the number of threads (which fixes the
summation order, so the bits). `seqedit stats --reuse FILE...` copies the first candidate whose
record equals its own, byte for byte, instead of summing again: on the same machine that is the
file it would have written. Files written before the record existed, or summed from anything
else, are not reused; the log says why for each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def stats_inputs(cfg: dict, model: str | Path, corpus: str | Path | None, threads: int) -> dict:
    """What a statistics file is summed from: `cfg` (the stage config), the model's digest, the
    corpus's digest (None without one, or where the file is missing: reading it fails later, with
    its own error) and the thread count."""
    from seqedit.archive import model_digest
    from seqedit.data.fetch import sha256_of

    return {"config": json.loads(json.dumps(cfg, sort_keys=True)), "model": model_digest(model),
            "corpus": sha256_of(corpus) if corpus and Path(corpus).is_file() else None, "threads": int(threads)}


def _differ(held: dict, wanted: dict) -> list[str]:
    out = [k for k in ("model", "corpus", "threads") if held.get(k) != wanted[k]]
    held_cfg = held.get("config") if isinstance(held.get("config"), dict) else {}
    for section in sorted(set(held_cfg) | set(wanted["config"])):
        if held_cfg.get(section) != wanted["config"].get(section):
            out.append(f"{section} settings")
    return out


def find_reusable(candidates: list[str | Path], wanted: dict, out: str | Path) -> tuple[Path | None, list[str]]:
    """The first of `candidates` summed from `wanted` (stats_inputs), and a line per candidate
    saying what was found. `out` itself is never a candidate."""
    from seqedit.core.stats import LayerStats

    lines = []
    out = Path(out).resolve()
    for path in map(Path, candidates):
        if not path.is_file():
            lines.append(f"{path} does not exist")
            continue
        if path.resolve() == out:
            continue
        try:
            held = LayerStats.load(path).meta.get("inputs")
        except Exception as err:  # noqa: BLE001 - any unreadable candidate is only skipped
            lines.append(f"{path} is not a statistics file ({type(err).__name__})")
            continue
        if not isinstance(held, dict):
            lines.append(f"{path} does not record its inputs (written before statistics recorded them)")
            continue
        differ = _differ(held, wanted)
        if not differ:
            lines.append(f"reused {path} (the same model, settings and threads)")
            return path, lines
        lines.append(f"{path} was summed with another {', '.join(differ)}")
    return None, lines


def copy_stats(src: str | Path, out: str | Path) -> None:
    """Copy `src` to `out` through a temporary file, so that `out` is never half written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(out)
