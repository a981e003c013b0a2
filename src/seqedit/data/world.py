"""A seeded synthetic world: fictional facts, edit records in both benchmark schemas, corpus.

Why: the study trains a tiny GPT-2 from scratch on CPU, which cannot know real-world
facts. Instead it memorises the facts of this fictional world (`corpus.txt`) and is then
edited on records that follow ROME's CounterFact schema (`counterfact.json`) and MEND's
ZsRE schema (`zsre.json`), so the same loaders and metrics serve real and synthetic data.

Determinism: every random choice comes from a `random.Random` seeded by the config's
`seed` and a stage name (names, facts, records, ...), never from the global RNG. The
same config gives byte-identical files; the world itself (names and facts) depends only
on `seed`, `n_subjects`, `n_relations` and `n_objects`, so changing e.g. `n_records`
changes which facts are edited but not what is true.

Specificity hygiene: edited facts are spread evenly over relations and objects, and
neighborhood/attribute prompts and ZsRE `loc` questions prefer facts that are never
edited, so in sequential editing a later edit does not silently change the "correct"
answer of an earlier record's specificity prompt (unless the world is too small).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

from seqedit.data.relations import RELATIONS, NameRegistry, Relation, make_first_name, make_surname

WORLD_FILES = ("counterfact.json", "zsre.json", "corpus.txt")

_FILLERS = (
    "{a} and {b} met at a festival.",
    "{a} wrote a long letter to {b}.",
    "{a} and {b} are old friends.",
    "{a} once read a book about {o}.",
    "Many people have heard of {o}.",
    "{a} gave a short speech about {o}.",
    "{a} shared a meal with {b} last winter.",
    "{a} and {b} argued about {o}.",
)


@dataclass
class WorldConfig:
    """Sizes of the synthetic world and of the edit set. Validated on construction."""

    seed: int = 0
    n_subjects: int = 240
    names: str = "unique"  # "unique" (shared given names, unique surnames) | "composite" (both shared)
    n_relations: int = 5
    n_objects: int = 12  # objects per relation
    n_records: int = 400  # edit records to emit (distinct (subject, relation) facts)
    n_neighbors: int = 10  # CounterFact neighborhood prompts per record (capped by availability)
    n_attribute: int = 10  # CounterFact attribute prompts per record (capped by availability)
    n_paraphrases: int = 2
    n_generation: int = 4
    corpus_repeats: int = 1
    n_filler: int = 300  # generic non-fact sentences added to the corpus

    def __post_init__(self) -> None:
        if self.names not in ("composite", "unique"):
            raise ValueError(f"WorldConfig.names must be 'composite' or 'unique', got {self.names!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "names":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"WorldConfig.{f.name} must be an int, got {value!r}")
        minimum = {"n_subjects": 2, "n_relations": 1, "n_objects": 2, "n_records": 1, "n_neighbors": 1,
                   "n_attribute": 0, "n_paraphrases": 1, "n_generation": 0, "corpus_repeats": 1, "n_filler": 0}
        for name, lo in minimum.items():
            if getattr(self, name) < lo:
                raise ValueError(f"WorldConfig.{name} must be >= {lo}, got {getattr(self, name)}")
        if self.n_relations > len(RELATIONS):
            raise ValueError(f"WorldConfig.n_relations must be <= {len(RELATIONS)} (built-in relations), "
                             f"got {self.n_relations}")
        if self.n_records > self.n_subjects * self.n_relations:
            raise ValueError(f"WorldConfig.n_records={self.n_records} exceeds the number of facts "
                             f"n_subjects*n_relations={self.n_subjects * self.n_relations}")
        if self.n_subjects // self.n_objects < 2:
            raise ValueError(f"WorldConfig.n_subjects={self.n_subjects} gives fewer than 2 subjects per object "
                             f"(n_objects={self.n_objects}), so some record would have no neighbor")
        max_para = min(len(r.templates) for r in RELATIONS[: self.n_relations]) - 1
        if self.n_paraphrases > max_para:
            raise ValueError(f"WorldConfig.n_paraphrases must be <= {max_para} (other templates per relation), "
                             f"got {self.n_paraphrases}")


@dataclass
class World:
    """The generated world: names, true facts, edit records and corpus lines."""

    config: WorldConfig
    relations: tuple[Relation, ...]
    subjects: tuple[str, ...]
    objects: dict[str, tuple[str, ...]]  # relation id -> its objects
    object_ids: dict[str, str]  # object name -> "Q..." id
    facts: dict[tuple[str, str], str]  # (subject, relation id) -> true object
    counterfact: list[dict] = field(default_factory=list)
    zsre: list[dict] = field(default_factory=list)
    corpus_lines: list[str] = field(default_factory=list)

    def true_object(self, subject: str, relation_id: str) -> str:
        return self.facts[(subject, relation_id)]

    def subjects_with(self, relation_id: str, obj: str) -> tuple[str, ...]:
        """Subjects whose true object for `relation_id` is `obj`, in subject order."""
        return tuple(s for s in self.subjects if self.facts[(s, relation_id)] == obj)

    def relation(self, relation_id: str) -> Relation:
        for rel in self.relations:
            if rel.id == relation_id:
                return rel
        raise KeyError(relation_id)

    def file_texts(self) -> dict[str, str]:
        """The three output files as text, keyed by file name."""
        return {
            "counterfact.json": _dump_json(self.counterfact),
            "zsre.json": _dump_json(self.zsre),
            "corpus.txt": "\n".join(self.corpus_lines) + "\n",
        }


def _rng(cfg: WorldConfig, stage: str) -> random.Random:
    """An RNG for one generation stage; string seeds are hashed deterministically (sha512)."""
    return random.Random(f"seqedit-world:{cfg.seed}:{stage}")


def _dump_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _sample_preferring(rng: random.Random, preferred: list[str], others: list[str], n: int) -> list[str]:
    """Up to n items: as many as possible from `preferred`, topped up from `others`."""
    take = rng.sample(preferred, min(n, len(preferred)))
    return take + rng.sample(others, min(n - len(take), len(others)))


def _build_names(cfg: WorldConfig, relations: tuple[Relation, ...]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Subject names, by `cfg.names`:

    - "composite": given names and surnames from two pools of about sqrt(n_subjects) each, so
      no single word identifies a subject, only the pair. A causal model first knows *who* at
      the subject's last token, where locate-then-edit methods read keys and write values, as
      for real entities. (With a unique word in the name a small model recalls facts by
      attending to that word's embedding from the last prompt position, and nothing reads the
      subject's residual stream.)
    - "unique": a shared given name and a unique surname.
    """
    rng = _rng(cfg, "names")
    registry = NameRegistry()
    if cfg.names == "unique":
        n_first = max(2, math.isqrt(cfg.n_subjects))
        firsts = [registry.draw(rng, make_first_name) for _ in range(n_first)]
        lasts = [registry.draw(rng, make_surname) for _ in range(cfg.n_subjects)]
        pairs = [(firsts[i % n_first], last) for i, last in enumerate(lasts)]
    else:
        n_first = max(2, math.isqrt(cfg.n_subjects - 1) + 1)
        n_last = -(-cfg.n_subjects // n_first)
        firsts = [registry.draw(rng, make_first_name) for _ in range(n_first)]
        lasts = [registry.draw(rng, make_surname) for _ in range(n_last)]
        # A shifted diagonal walk over the grid spreads every word over ~n_subjects/pool subjects.
        grid = [(firsts[i % n_first], lasts[(i // n_first + i) % n_last]) for i in range(n_first * n_last)]
        pairs = list(dict.fromkeys(grid))[: cfg.n_subjects]
    rng.shuffle(pairs)
    subjects = tuple(f"{a} {b}" for a, b in pairs)
    objects = {rel.id: tuple(registry.draw(rng, rel.make_object) for _ in range(cfg.n_objects))
               for rel in relations}
    return subjects, objects


def _assign_facts(cfg: WorldConfig, relations, subjects, objects) -> dict[tuple[str, str], str]:
    """Balanced assignment: each object gets n_subjects/n_objects subjects (+-1), shuffled."""
    rng = _rng(cfg, "facts")
    facts: dict[tuple[str, str], str] = {}
    for rel in relations:
        pool = [objects[rel.id][i % cfg.n_objects] for i in range(cfg.n_subjects)]
        rng.shuffle(pool)
        for subject, obj in zip(subjects, pool):
            facts[(subject, rel.id)] = obj
    return facts


def _choose_edits(cfg: WorldConfig, world: World) -> list[tuple[str, str, str]]:
    """n_records distinct facts as (subject, relation id, target_new), spread evenly.

    Records are split evenly over relations, and within a relation taken round-robin over
    objects, so every object keeps as many never-edited subjects as possible.
    """
    rng = _rng(cfg, "edits")
    n_rel = len(world.relations)
    counts = [cfg.n_records // n_rel] * n_rel
    for i in rng.sample(range(n_rel), cfg.n_records % n_rel):
        counts[i] += 1
    chosen: list[tuple[str, str]] = []
    for rel, count in zip(world.relations, counts):
        buckets = [list(world.subjects_with(rel.id, obj)) for obj in world.objects[rel.id]]
        for bucket in buckets:
            rng.shuffle(bucket)
        rng.shuffle(buckets)
        taken = 0
        while taken < count:
            for bucket in buckets:
                if bucket and taken < count:
                    chosen.append((bucket.pop(), rel.id))
                    taken += 1
    rng.shuffle(chosen)
    edits = []
    for subject, rid in chosen:
        true = world.facts[(subject, rid)]
        edits.append((subject, rid, rng.choice([o for o in world.objects[rid] if o != true])))
    return edits


def _fact_sentence(template: str, subject: str, obj: str) -> str:
    return f"{template.format(subject)} {obj}."


def _unrelated_fact(rng: random.Random, world: World, subject: str, avoid: set[str]) -> tuple[str, str, str]:
    """A random true fact (subject2, relation id, object) about another subject, object not in `avoid`."""
    for _ in range(200):
        s2 = rng.choice(world.subjects)
        rel = rng.choice(world.relations)
        if s2 != subject and world.facts[(s2, rel.id)] not in avoid:
            return s2, rel.id, world.facts[(s2, rel.id)]
    s2 = rng.choice([s for s in world.subjects if s != subject])
    rel = rng.choice(world.relations)
    return s2, rel.id, world.facts[(s2, rel.id)]


def _counterfact_records(cfg: WorldConfig, world: World, edits) -> list[dict]:
    rng = _rng(cfg, "counterfact")
    edited = {(s, rid) for s, rid, _ in edits}
    records = []
    for case_id, (subject, rid, new) in enumerate(edits):
        rel = world.relation(rid)
        true = world.facts[(subject, rid)]
        prompt = rng.choice(rel.templates)
        paraphrases = []
        for template in rng.sample([t for t in rel.templates if t != prompt], cfg.n_paraphrases):
            s2, rid2, obj2 = _unrelated_fact(rng, world, subject, {true, new})
            prefix = _fact_sentence(rng.choice(world.relation(rid2).templates), s2, obj2)
            paraphrases.append(f"{prefix} {template.format(subject)}")

        def pick(obj: str, n: int) -> list[str]:
            cands = [s for s in world.subjects_with(rid, obj) if s != subject]
            fresh = [s for s in cands if (s, rid) not in edited]
            stale = [s for s in cands if (s, rid) in edited]
            return [rng.choice(rel.templates).format(s) for s in _sample_preferring(rng, fresh, stale, n)]

        records.append({
            "case_id": case_id,
            "pararel_idx": world.relations.index(rel) * cfg.n_subjects + world.subjects.index(subject),
            "requested_rewrite": {
                "prompt": prompt,
                "relation_id": rid,
                "target_new": {"str": new, "id": world.object_ids[new]},
                "target_true": {"str": true, "id": world.object_ids[true]},
                "subject": subject,
            },
            "paraphrase_prompts": paraphrases,
            "neighborhood_prompts": pick(true, cfg.n_neighbors),
            "attribute_prompts": pick(new, cfg.n_attribute),
            "generation_prompts": [rng.choice(rel.generation).format(subject) for _ in range(cfg.n_generation)],
        })
    return records


def nq_question(question_template: str, subject: str) -> str:
    """The ZsRE `loc` form of a question: "nq question: " + lower-cased text, no trailing "?"."""
    text = question_template.format(subject).lower()
    return "nq question: " + (text[:-1] if text.endswith("?") else text)


def _zsre_records(cfg: WorldConfig, world: World, edits) -> list[dict]:
    rng = _rng(cfg, "zsre")
    edited = {(s, rid) for s, rid, _ in edits}
    records = []
    for case_id, (subject, rid, new) in enumerate(edits):
        rel = world.relation(rid)
        src_q, reph_q = rng.sample(rel.questions, 2)
        for _ in range(200):  # a never-edited fact about another subject, if one can be found
            s2, rel2 = rng.choice(world.subjects), rng.choice(world.relations)
            if s2 != subject and (s2, rel2.id) not in edited:
                break
        else:
            s2 = rng.choice([s for s in world.subjects if s != subject])
        true = world.facts[(subject, rid)]
        src = src_q.format(subject)
        records.append({
            "case_id": case_id,
            "subject": subject,
            "src": src,
            "pred": true,
            "rephrase": reph_q.format(subject),
            "alt": new,
            "answers": [new],
            "loc": nq_question(rng.choice(rel2.questions), s2),
            "loc_ans": world.facts[(s2, rel2.id)],
            "cond": f"{true} >> {new} || {src}",
        })
    return records


def _corpus_lines(cfg: WorldConfig, world: World) -> list[str]:
    """True statements in every template and question form, loc questions, and fillers."""
    base: list[str] = []
    for subject in world.subjects:
        for rel in world.relations:
            obj = world.facts[(subject, rel.id)]
            base += [_fact_sentence(t, subject, obj) for t in rel.templates]
            base += [f"{q.format(subject)} {obj}." for q in rel.questions]
    seen: set[str] = set()
    for rec in world.zsre:
        line = f"{rec['loc']}? {rec['loc_ans']}."
        if line not in seen:
            seen.add(line)
            base.append(line)
    rng = _rng(cfg, "filler")
    all_objects = [o for rel in world.relations for o in world.objects[rel.id]]
    for _ in range(cfg.n_filler):
        a, b = rng.sample(world.subjects, 2)
        base.append(rng.choice(_FILLERS).format(a=a, b=b, o=rng.choice(all_objects)))
    rng = _rng(cfg, "corpus")
    lines: list[str] = []
    for _ in range(cfg.corpus_repeats):
        block = list(base)
        rng.shuffle(block)
        lines += block
    return lines


def generate_world(cfg: WorldConfig | None = None) -> World:
    """Build the world for `cfg` (default config if None): names, facts, records, corpus."""
    cfg = cfg or WorldConfig()
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"expected a WorldConfig, got {type(cfg).__name__}")
    relations = RELATIONS[: cfg.n_relations]
    subjects, objects = _build_names(cfg, relations)
    all_objects = [o for rel in relations for o in objects[rel.id]]
    qids = _rng(cfg, "ids").sample(range(1000, 100000), len(all_objects))
    world = World(
        config=cfg,
        relations=relations,
        subjects=subjects,
        objects=objects,
        object_ids={o: f"Q{q}" for o, q in zip(all_objects, qids)},
        facts=_assign_facts(cfg, relations, subjects, objects),
    )
    edits = _choose_edits(cfg, world)
    world.counterfact = _counterfact_records(cfg, world, edits)
    world.zsre = _zsre_records(cfg, world, edits)
    world.corpus_lines = _corpus_lines(cfg, world)
    return world


def write_world(cfg: WorldConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write counterfact.json, zsre.json and corpus.txt into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in generate_world(cfg).file_texts().items():
        paths[name] = out / name
        paths[name].write_bytes(text.encode("utf-8"))
    return paths
