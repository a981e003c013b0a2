"""Finished edit runs carried from one machine to another.

A long study (hours per run on a CPU) may be run in parts: runs finished on one machine are
packed into an archive folder, and on another machine the workflow restores each archived run
instead of editing again, but only where the run would have had the same inputs. Every run
folder holds `inputs.json`, the digests of what it read:

- `config`: the run's stage config (method, hyperparameters, run settings, evaluation, model,
  seed), as canonical JSON;
- `model`: every file of the model directory but its `provenance.json` (which records times);
  a hub id is taken as it is;
- `stats`: the layer statistics' sums and token count (not the file's bytes: its metadata
  records timings);
- `records`: the records file's bytes.

A run is restored only when all four agree; otherwise it runs, and the reason is printed. The
digests do not cover the code: the restored run's `metrics.json` keeps the commit it was run at.

The config digest covers the whole stage config, titles included; `config_identity` covers it
without the fields that only name a run in the report (PRESENTATION: an ablation's title), so a
run whose config differs from the archived one in those fields alone is still restored, and keeps
the title it was run with. For runs archived before `config_identity` was recorded, it is computed
from the config their `metrics.json` holds, once that config's digest is checked to be the
archived `config`.

Statistics over the model's own generations also keep their texts. The archive holds them
(`stats_texts.json`, with the model digest and the generation settings), so that another machine
sums its statistics over the same sample instead of generating one again (most of the statistics
stage's time, and its texts could differ: sampling on another CPU may draw another token where two
are near a tie).

The statistics are sums over a few hundred thousand tokens, and another CPU rounds them
otherwise (other kernels, other summation orders), so their bytes, and digest, differ between
machines even for the same model, texts and settings. `stats_fingerprint` holds the token count,
the digest of the token sample (`tokens`, where the statistics record it) and, per layer, the
trace, the Frobenius norm and quadratic forms uᵀCu along fixed random directions. When the digests
differ, the statistics count as the same if the counts are equal, the token samples are the same
(where both sides record theirs) and every fingerprint value agrees within STATS_RTOL.

Measured on SmolLM2-135M's statistics (4,000 generated texts, layers 1-5): prepared with the same
settings on an Intel Xeon and on an AMD EPYC (238,673 tokens on both), they differ by up to 9.6e-5
relative; one of
the 4,000 texts replaced by another moves the values by 2.7e-4 to 7.2e-4 (8 replacements); another
sample size or seed changes the token count. STATS_RTOL, 1e-3, is ten times the rounding between
the two CPUs, so it cannot tell one replaced text from rounding: the token digest, where both sides
have it, does so exactly. Runs archived before the statistics recorded their token digest are
matched on the count and the fingerprint alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from seqedit.data.fetch import sha256_of
from seqedit.repro import config_hash

# What a finished run folder holds; metrics.json, the workflow's sign of a finished run, is copied last.
RUN_FILES = ("curve.json", "per_record.json", "hidden.npz", "timing.json", "inputs.json", "metrics.json")
INPUTS = "inputs.json"
DIGEST_KEYS = ("config", "model", "stats", "records")
TEXTS = "stats_texts.json"
STATS_RTOL = 1e-3
N_DIRECTIONS = 8


# (section, field) of a stage config that name a run for the report and change nothing it computes
PRESENTATION = (("variant", "title"),)


def config_digest(cfg: dict) -> str:
    return config_hash(cfg, length=64)


def identity_digest(cfg: dict) -> str:
    """The digest of a stage config without its PRESENTATION fields."""
    trimmed = dict(cfg)
    for sect, key in PRESENTATION:
        if isinstance(trimmed.get(sect), dict):
            trimmed[sect] = {k: v for k, v in trimmed[sect].items() if k != key}
    return config_digest(trimmed)


def model_digest(model: str | Path) -> str:
    """sha256 over the model directory's files (names and bytes, provenance.json left out), of a
    single model file, or of a hub id."""
    path = Path(model)
    if path.is_file():
        return sha256_of(path)
    if not path.is_dir():
        return "hub:" + str(model)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != "provenance.json"):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_of(f)}\n".encode())
    return h.hexdigest()


def stats_digest(stats) -> str | None:
    """sha256 of a LayerStats' token count and per-layer sums (None: a run without statistics)."""
    if stats is None:
        return None
    h = hashlib.sha256(str(int(stats.count)).encode())
    for layer in stats.layers:
        t = stats.mom2[layer].detach().cpu().contiguous()
        h.update(f"|{layer}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def stats_fingerprint(stats) -> dict | None:
    """{"count": tokens, "tokens": the sample's digest (where recorded), "layers": {layer: [trace,
    Frobenius norm, uᵀCu for N_DIRECTIONS fixed random unit vectors u]}} of the summed second
    moments (None: no statistics)."""
    import torch

    if stats is None:
        return None
    layers = {}
    for layer in stats.layers:
        c = stats.mom2[layer].detach().cpu().double()
        u = torch.randn(c.shape[0], N_DIRECTIONS, generator=torch.Generator().manual_seed(layer), dtype=torch.float64)
        u = u / u.norm(dim=0)
        layers[str(layer)] = [c.trace().item(), c.norm().item(), *((u * (c @ u)).sum(0)).tolist()]
    fingerprint = {"count": int(stats.count), "layers": layers}
    if stats.meta.get("tokens_sha256"):
        fingerprint["tokens"] = stats.meta["tokens_sha256"]
    return fingerprint


def same_stats(a: dict | None, b: dict | None) -> tuple[bool, float]:
    """Whether two fingerprints describe the same statistics up to float rounding, and the
    largest relative difference of their values (inf when counts, token samples or layers differ;
    a fingerprint without a token digest is compared on its values alone)."""
    if not a or not b or a.get("count") != b.get("count") or sorted(a["layers"]) != sorted(b["layers"]):
        return False, float("inf")
    if a.get("tokens") and b.get("tokens") and a["tokens"] != b["tokens"]:
        return False, float("inf")
    worst = 0.0
    for layer, values in a["layers"].items():
        if len(values) != len(b["layers"][layer]):
            return False, float("inf")
        for x, y in zip(values, b["layers"][layer]):
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
    return worst <= STATS_RTOL, worst


def input_digests(cfg: dict, model: str | Path, stats, records: str | Path) -> dict:
    return {"config": config_digest(cfg), "config_identity": identity_digest(cfg), "model": model_digest(model),
            "stats": stats_digest(stats), "records": sha256_of(records), "stats_fingerprint": stats_fingerprint(stats)}


def _archived_identity(src: Path, archived: dict) -> str | None:
    """The archived run's config_identity: recorded, or computed from its metrics.json config when
    that config is the one its `config` digest was taken of (None where neither holds)."""
    if archived.get("config_identity"):
        return archived["config_identity"]
    try:
        cfg = json.loads((src / "metrics.json").read_text()).get("config")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(cfg, dict) or config_digest(cfg) != archived.get("config"):
        return None
    return identity_digest(cfg)


def _run_key(run_dir: Path) -> Path:
    """METHOD/VARIANT/seed~N: where a run folder sits below its study's edit folder."""
    parts = Path(run_dir).parts
    if len(parts) < 3 or not parts[-1].startswith("seed~"):
        raise ValueError(f"{run_dir} is not a run folder (…/METHOD/VARIANT/seed~N)")
    return Path(*parts[-3:])


def restore(archive: str | Path, out_dir: str | Path, digests: dict) -> tuple[bool, str]:
    """Copy the archived run matching `out_dir` into it if its input digests equal `digests`.

    Returns (restored, reason): the reason names the archive folder taken, or why none was."""
    if not Path(archive).is_dir():
        raise FileNotFoundError(f"the archive {archive} (restore_from) does not exist")
    src = Path(archive) / _run_key(Path(out_dir))
    if not (src / "metrics.json").is_file():
        return False, f"{src} holds no finished run"
    try:
        archived = json.loads((src / INPUTS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False, f"{src} has no readable {INPUTS}"
    differ = [k for k in DIGEST_KEYS if archived.get(k) != digests.get(k)]
    notes = ""
    if "config" in differ and digests.get("config_identity") and _archived_identity(src, archived) == digests["config_identity"]:
        differ.remove("config")
        notes = f" (its config differs only in {', '.join('.'.join(f) for f in PRESENTATION)}, kept as it ran)"
    if "stats" in differ:
        same, worst = same_stats(archived.get("stats_fingerprint"), digests.get("stats_fingerprint"))
        if same:
            differ.remove("stats")
            sample = ("the same token sample" if archived["stats_fingerprint"].get("tokens")
                      and digests["stats_fingerprint"].get("tokens") else "no token digest to compare")
            notes += f" (its statistics agree within float rounding: {worst:.1e} relative; {sample})"
    if differ:
        return False, f"{src} was run with other inputs ({', '.join(differ)} differ)"
    missing = [name for name in RUN_FILES if not (src / name).is_file()]
    if missing:
        return False, f"{src} lacks {', '.join(missing)}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        tmp = out / (name + ".restoring")
        shutil.copyfile(src / name, tmp)
        tmp.replace(out / name)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # an interrupted attempt's, now superseded
    return True, f"restored from {src}{notes}"


def texts_record(stats_meta: dict, model: str | Path) -> dict | None:
    """What TEXTS holds for statistics over generated texts: the texts, the generation settings,
    sample size and seed, and the digest of the model that wrote them (None: not generated, or
    collected before the statistics kept their texts)."""
    if stats_meta.get("source") != "generated" or not stats_meta.get("texts"):
        return None
    return {"model": model_digest(model), "generated": stats_meta["generated"], "n_samples": stats_meta["n_samples"],
            "seed": stats_meta["seed"], "tokens_sha256": stats_meta.get("tokens_sha256"), "texts": stats_meta["texts"]}


def archived_texts(path: str | Path, generated: dict, n_samples: int, seed: int,
                   model: str | Path) -> tuple[list[str] | None, str]:
    """The generated texts archived at `path` when they were written by this model with these
    settings, else None; and what was found."""
    path = Path(path)
    if not path.is_file():
        return None, f"{path} does not exist: generating the texts"
    try:
        held = json.loads(path.read_text())
        wanted = {"generated": generated, "n_samples": int(n_samples), "seed": int(seed)}
        differ = [k for k, v in wanted.items() if held[k] != v]
        texts = held["texts"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return None, f"{path} is not an archive of generated texts ({type(err).__name__}): generating the texts"
    if held["model"] != model_digest(model):
        differ.insert(0, "model")
    if differ:
        return None, f"{path} was generated with another {', '.join(differ)}: generating the texts"
    if not (isinstance(texts, list) and len(texts) == int(n_samples) and all(isinstance(t, str) for t in texts)):
        return None, f"{path} does not hold {n_samples} texts: generating the texts"
    return texts, f"the {len(texts)} texts taken from {path} (the same model and settings)"


def pack_texts(stats: str | Path, model: str | Path, archive: str | Path) -> Path | None:
    """Write the generated texts that the statistics file `stats` was summed over, with the digest
    of `model` that wrote them, into `archive` (TEXTS); None when the statistics hold none."""
    from seqedit.core.stats import LayerStats

    record = texts_record(LayerStats.load(stats).meta, model)
    if record is None:
        return None
    archive = Path(archive)
    archive.mkdir(parents=True, exist_ok=True)
    tmp = archive / (TEXTS + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False))
    tmp.replace(archive / TEXTS)
    return archive / TEXTS


def pack(edit_dir: str | Path, archive: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy every finished run below `edit_dir` (results/<model>/edit) into `archive`, in the same
    METHOD/VARIANT/seed~N layout. Returns (packed, skipped): runs without inputs.json (run before
    it was written) are skipped, since no later machine could check them."""
    edit_dir, archive = Path(edit_dir), Path(archive)
    if not edit_dir.is_dir():
        raise FileNotFoundError(f"{edit_dir} does not exist")
    packed, skipped = [], []
    for metrics in sorted(edit_dir.glob("*/*/seed~*/metrics.json")):
        run = metrics.parent
        if any(not (run / name).is_file() for name in RUN_FILES):
            skipped.append(run)
            continue
        dest = archive / _run_key(run)
        dest.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            shutil.copyfile(run / name, dest / name)
        packed.append(dest)
    return packed, skipped
