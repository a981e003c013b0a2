"""The synthetic world: determinism, CounterFact/ZsRE schema, fact consistency, corpus."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from seqedit.data import WORLD_FILES, WorldConfig, generate_world, load_counterfact, load_zsre, write_world
from seqedit.data.relations import RELATIONS

SMALL = dict(n_subjects=60, n_relations=3, n_objects=5, n_records=40, n_neighbors=4, n_attribute=3,
             n_paraphrases=2, n_generation=3, corpus_repeats=2, n_filler=20)


@pytest.fixture(scope="module")
def default_world():
    return generate_world(WorldConfig())


@pytest.fixture(scope="module")
def default_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return write_world(WorldConfig(), out)


def _read_bytes(paths) -> dict[str, bytes]:
    return {name: p.read_bytes() for name, p in paths.items()}


def _subject_in(prompt: str, subjects) -> str:
    found = [s for s in subjects if s in prompt]
    assert len(found) == 1, (prompt, found)
    return found[0]


def test_write_world_writes_exactly_three_files(tmp_path):
    write_world(WorldConfig(**SMALL), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(WORLD_FILES)


def test_same_config_gives_identical_bytes(tmp_path):
    a = _read_bytes(write_world(WorldConfig(seed=3, **SMALL), tmp_path / "a"))
    b = _read_bytes(write_world(WorldConfig(seed=3, **SMALL), tmp_path / "b"))
    assert a == b
    assert all(data.endswith(b"\n") for data in a.values())


def test_default_config_is_deterministic(tmp_path, default_files):
    again = _read_bytes(write_world(WorldConfig(), tmp_path))
    assert again == _read_bytes(default_files)


def test_different_seed_gives_different_bytes(tmp_path):
    a = _read_bytes(write_world(WorldConfig(seed=0, **SMALL), tmp_path / "a"))
    b = _read_bytes(write_world(WorldConfig(seed=1, **SMALL), tmp_path / "b"))
    assert all(a[name] != b[name] for name in WORLD_FILES)


def test_facts_do_not_depend_on_record_count():
    w1 = generate_world(WorldConfig(**SMALL))
    w2 = generate_world(WorldConfig(**{**SMALL, "n_records": 10}))
    assert w1.facts == w2.facts and w1.subjects == w2.subjects


@pytest.mark.parametrize("bad, field", [
    (dict(n_records=240 * 5 + 1), "n_records"),
    (dict(n_objects=1), "n_objects"),
    (dict(n_relations=len(RELATIONS) + 1), "n_relations"),
    (dict(n_subjects=20, n_objects=12, n_records=10), "n_subjects"),
    (dict(n_paraphrases=4), "n_paraphrases"),
    (dict(n_neighbors=0), "n_neighbors"),
    (dict(corpus_repeats=0), "corpus_repeats"),
    (dict(seed="0"), "seed"),
])
def test_config_validation_names_field(bad, field):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**bad)


def test_names_unique_and_not_substrings(default_world):
    w = default_world
    names = list(w.subjects) + [o for objs in w.objects.values() for o in objs]
    assert len(names) == len(set(names)) == 240 + 5 * 12
    lowered = [n.lower() for n in names]
    for i, a in enumerate(lowered):
        assert "{" not in a and "}" not in a
        for j, b in enumerate(lowered):
            assert i == j or a not in b, (names[i], names[j])
    assert all(len(s.split()) == 2 and all(p[0].isupper() for p in s.split()) for s in w.subjects)


def test_objects_are_balanced(default_world):
    w = default_world
    for rel in w.relations:
        counts = Counter(w.facts[(s, rel.id)] for s in w.subjects)
        assert set(counts) == set(w.objects[rel.id])
        assert max(counts.values()) - min(counts.values()) <= 1
        assert min(counts.values()) == 240 // 12


def test_builtin_relation_table():
    assert len(RELATIONS) >= 8
    for rel in RELATIONS:
        assert rel.id.startswith("P") and len(rel.templates) >= 4 and len(rel.questions) >= 2
        assert rel.generation
        for t in rel.templates + rel.questions + rel.generation:
            assert t.count("{}") == 1, t
        assert all(q.endswith("?") for q in rel.questions)


def test_counterfact_schema_and_counts(default_world, default_files):
    w, cfg = default_world, default_world.config
    raw = json.loads(default_files["counterfact.json"].read_text(encoding="utf-8"))
    assert [r["case_id"] for r in raw] == list(range(cfg.n_records))
    assert set(raw[0]) == {"case_id", "pararel_idx", "requested_rewrite", "paraphrase_prompts",
                           "neighborhood_prompts", "attribute_prompts", "generation_prompts"}
    assert set(raw[0]["requested_rewrite"]) == {"prompt", "relation_id", "target_new", "target_true", "subject"}
    facts = {(r["requested_rewrite"]["subject"], r["requested_rewrite"]["relation_id"]) for r in raw}
    assert len(facts) == cfg.n_records  # distinct facts

    records = load_counterfact(default_files["counterfact.json"])
    assert len(records) == 400
    for rec in records:
        req = rec.request
        assert rec.kind == "counterfact" and rec.neighborhood_answer is None
        assert len(rec.paraphrase_prompts) == cfg.n_paraphrases
        assert len(rec.neighborhood_prompts) == cfg.n_neighbors
        assert len(rec.attribute_prompts) == cfg.n_attribute
        assert len(rec.generation_prompts) == cfg.n_generation
        assert req.target_new != req.target_true
        assert w.true_object(req.subject, req.relation_id) == req.target_true
        assert req.target_new in w.objects[req.relation_id]
        assert req.prompt in w.relation(req.relation_id).templates
        assert rec.extra["target_new_id"] == w.object_ids[req.target_new]
        for p in rec.paraphrase_prompts:
            assert req.subject in p and "{" not in p
            assert not p.startswith(req.subject)  # carries a noisy prefix sentence
        for p in rec.neighborhood_prompts:
            s = _subject_in(p, w.subjects)
            assert s != req.subject and w.true_object(s, req.relation_id) == req.target_true
        for p in rec.attribute_prompts:
            assert w.true_object(_subject_in(p, w.subjects), req.relation_id) == req.target_new
        assert all(req.subject in p and "{" not in p for p in rec.generation_prompts)


def test_default_world_neighbors_are_never_edited(default_world):
    """Specificity prompts avoid facts that another record edits (enough room by default)."""
    w = default_world
    edited = {(r["requested_rewrite"]["subject"], r["requested_rewrite"]["relation_id"]) for r in w.counterfact}
    for r in w.counterfact:
        rid = r["requested_rewrite"]["relation_id"]
        for p in r["neighborhood_prompts"] + r["attribute_prompts"]:
            assert (_subject_in(p, w.subjects), rid) not in edited
    for z in w.zsre:
        assert z["subject"].lower() not in z["loc"]


def test_corpus_has_true_statements_but_never_counterfactuals(default_world, default_files):
    w = default_world
    lines = default_files["corpus.txt"].read_text(encoding="utf-8").splitlines()
    assert lines == w.corpus_lines
    line_set = set(lines)
    text = "\n".join(lines)
    for rec in w.counterfact:
        rw = rec["requested_rewrite"]
        query = rw["prompt"].format(rw["subject"])
        assert f"{query} {rw['target_true']['str']}." in line_set
        assert f"{query} {rw['target_new']['str']}." not in text
    for z in w.zsre:
        assert f"{z['loc']}? {z['loc_ans']}." in line_set
        assert f"{z['src']} {z['pred']}." in line_set
        assert f"{z['src']} {z['answers'][0]}." not in line_set
    n_facts = 240 * 5
    per_fact = sum(len(r.templates) + len(r.questions) for r in w.relations) // 5
    assert len(lines) == n_facts * per_fact + len({z["loc"] for z in w.zsre}) + w.config.n_filler


def test_corpus_repeats_shuffle_each_copy():
    w = generate_world(WorldConfig(**SMALL))
    lines = w.corpus_lines
    half = len(lines) // 2
    assert Counter(lines[:half]) == Counter(lines[half:])
    assert lines[:half] != lines[half:]


def test_zsre_file_loads_and_matches_facts(default_world, default_files):
    w = default_world
    raw = json.loads(default_files["zsre.json"].read_text(encoding="utf-8"))
    assert {"case_id", "subject", "src", "rephrase", "answers", "alt", "pred", "loc", "loc_ans"} <= set(raw[0])
    records = load_zsre(default_files["zsre.json"])
    assert len(records) == 400
    cf = w.counterfact
    for rec, z, c in zip(records, raw, cf):
        req = rec.request
        assert rec.kind == "zsre" and req.subject in z["src"]
        assert req.prompt.format(req.subject) == z["src"]
        assert req.subject == c["requested_rewrite"]["subject"]
        assert req.target_new == z["alt"] == c["requested_rewrite"]["target_new"]["str"]
        assert req.target_true == c["requested_rewrite"]["target_true"]["str"]
        assert rec.paraphrase_prompts[0] != z["src"] and req.subject in rec.paraphrase_prompts[0]
        assert rec.neighborhood_prompts == (z["loc"] + "?",)
        assert z["loc"].startswith("nq question: ") and z["loc"] == z["loc"].lower()
        assert rec.neighborhood_answer == z["loc_ans"]
        assert req.subject.lower() not in z["loc"]


def test_small_world_caps_neighbors_at_availability():
    # 12 subjects, 6 objects: each object has 2 subjects, so 1 neighbor and 2 attribute subjects.
    w = generate_world(WorldConfig(n_subjects=12, n_relations=1, n_objects=6, n_records=12,
                                   n_neighbors=10, n_attribute=10, n_filler=0))
    assert all(len(r["neighborhood_prompts"]) == 1 for r in w.counterfact)
    assert all(len(r["attribute_prompts"]) == 2 for r in w.counterfact)
