"""Texts of the layer statistics: a text dataset through `datasets.load_dataset`, offline.

Local files stand in for the hub dataset (the `json` and `text` builders with data_files take the
same code path as wikitext or Wikipedia); the hub itself is only reached to check that a dataset
that is neither cached nor reachable fails with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqedit.data.texts import TextDatasetConfig, corpus_texts, dataset_texts

ARTICLES = [{"title": f"Article {i}", "text": "" if i % 4 == 0 else f"Article number {i} says that fact {i} holds."}
            for i in range(60)]  # every fourth text empty, as wikitext's blank lines
NON_EMPTY = [a["text"] for a in ARTICLES if a["text"]]


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Arrow files of the loaded (non-streaming) splits go to the test's folder, not ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture
def jsonl_file(tmp_path) -> Path:
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in ARTICLES))
    return path


def json_config(path: Path, **extra) -> TextDatasetConfig:
    return TextDatasetConfig(**{"path": "json", "name": None, "data_files": str(path), **extra})


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "loaded"])
def test_dataset_texts_are_a_seeded_sample_of_the_non_empty_texts(jsonl_file, streaming):
    cfg = json_config(jsonl_file, streaming=streaming, shuffle_buffer=16)
    texts = list(dataset_texts(cfg, 20, seed=0))
    assert len(texts) == 20 and len(set(texts)) == 20
    assert set(texts) <= set(NON_EMPTY)
    assert texts == list(dataset_texts(cfg, 20, seed=0))  # same seed, same texts
    assert texts != list(dataset_texts(cfg, 20, seed=1))
    assert sorted(dataset_texts(cfg, 1000, seed=0)) == sorted(NON_EMPTY)  # n_samples beyond the split


def test_without_shuffle_buffer_the_stream_is_read_in_order(jsonl_file):
    cfg = json_config(jsonl_file, streaming=True, shuffle_buffer=0)
    assert list(dataset_texts(cfg, 10, seed=3)) == NON_EMPTY[:10]


def test_text_builder_reads_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(a["text"] for a in ARTICLES) + "\n")
    cfg = TextDatasetConfig(path="text", name=None, data_files=str(path), shuffle_buffer=0)
    assert list(dataset_texts(cfg, 5, seed=0)) == NON_EMPTY[:5]


def test_a_missing_text_field_is_named(jsonl_file):
    cfg = json_config(jsonl_file, text_field="body")
    with pytest.raises(ValueError, match=r"no column 'body'.*stats.dataset.text_field"):
        list(dataset_texts(cfg, 5, seed=0))


def test_missing_local_files_fail_in_one_line(tmp_path):
    cfg = json_config(tmp_path / "absent.jsonl")
    with pytest.raises(OSError) as err:
        dataset_texts(cfg, 5, seed=0)  # opened at once, before any text is asked for
    assert "cannot load the text dataset 'json'" in str(err.value) and "\n" not in str(err.value)


def test_corpus_texts_sample_the_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(a["text"] for a in ARTICLES))
    texts = corpus_texts(path, 10, seed=0)
    assert len(texts) == 10 and set(texts) <= set(NON_EMPTY)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus_texts(tmp_path / "absent.txt", 10, seed=0)


def test_offline_hub_dataset_not_in_cache_fails_with_one_line(tmp_path):
    # the CLI opens the texts before it loads the model, so no model is needed to reach the error
    config = tmp_path / "stats.json"
    config.write_text(json.dumps({"stats": {"layers": [0], "source": "dataset", "n_samples": 10,
                                            "dataset": {"path": "wikitext", "name": "wikitext-103-raw-v1"}}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_DATASETS_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "seqedit.cli", "stats", "--config", str(config), "--model",
                           str(tmp_path / "no-model"), "--out", str(tmp_path / "s.pt")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("seqedit stats: error: cannot load the text dataset 'wikitext'"), lines[0]
    assert "local cache" in lines[0] and "stats.dataset.path" in lines[0]


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    out = tmp_path / "model"
    make_tiny_model("gpt2", len(tiny_tokenizer)).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def test_stats_command_over_a_local_dataset(tmp_path, jsonl_file, tiny_model_dir):
    from seqedit.cli import main
    from seqedit.core.stats import LayerStats

    config = tmp_path / "stats.json"
    config.write_text(json.dumps({
        "stats": {"layers": [0, 2], "source": "dataset", "n_samples": 12, "max_length": 16, "batch_size": 4,
                  "dataset": {"path": "json", "name": None, "data_files": str(jsonl_file), "shuffle_buffer": 8}},
        "model": {"dtype": "float32", "device": "cpu"},
    }))
    main(["stats", "--config", str(config), "--model", str(tiny_model_dir), "--out", str(tmp_path / "s.pt"),
          "--quiet"])
    stats = LayerStats.load(tmp_path / "s.pt")
    assert stats.layers == [0, 2] and stats.meta["n_texts"] == 12 and stats.count > 12
    assert stats.meta["dataset"]["path"] == "json" and "corpus" not in stats.meta
    assert torch.isfinite(stats.cov(0)).all()


def test_stats_command_wants_the_corpus_only_with_source_corpus(tmp_path, jsonl_file, capsys):
    from seqedit.cli import main

    config = tmp_path / "stats.json"
    for stats, args, message in [
        ({"layers": [0]}, [], "give the text file with --corpus"),
        ({"layers": [0], "source": "dataset"}, ["--corpus", str(jsonl_file)], "--corpus is not used"),
    ]:
        config.write_text(json.dumps({"stats": stats}))
        with pytest.raises(SystemExit) as exit_:
            main(["stats", "--config", str(config), "--model", "m", "--out", str(tmp_path / "s.pt"), *args])
        assert exit_.value.code == 1
        assert message in capsys.readouterr().err
