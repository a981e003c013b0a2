"""The built-in relation table and the seeded name generator of the synthetic world.

Each `Relation` carries everything needed to talk about one kind of fact:
- statement templates ("{} was born in"), ending right before the object, as in
  CounterFact's `requested_rewrite.prompt`;
- question templates ("Where was {} born?") for the ZsRE-style file;
- generation-prompt templates for CounterFact's `generation_prompts`;
- suffixes that shape its object names (cities end in "-ia", languages in "-ish", ...),
  so objects of different relations look different to a small language model.

Names are built from syllables by a `random.Random` that the caller owns (no global RNG).
`NameRegistry` guarantees that every name is unique and that no name is a substring of
another (compared case-insensitively), so finding a subject or object inside a prompt is
never ambiguous.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "st", "th", "tr", "vr", "qu", "sh")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("n", "r", "l", "s", "th", "m", "k", "x")
_SURNAME_SUFFIXES = ("more", "well", "by", "son", "stead", "ridge", "holm", "croft")
_MAX_TRIES = 20000


@dataclass(frozen=True)
class Relation:
    """One relation: its Wikidata-like id, text templates and object-name suffixes."""

    id: str
    name: str
    templates: tuple[str, ...]  # statements, each with one "{}", ending before the object
    questions: tuple[str, ...]  # questions, each with one "{}", ending in "?"
    generation: tuple[str, ...]  # open-ended generation prompts, each with one "{}"
    suffixes: tuple[str, ...]  # endings of this relation's object names

    def make_object(self, rng: random.Random) -> str:
        """One candidate object name: a 1-2 syllable stem plus one of the suffixes."""
        suffix = rng.choice(self.suffixes)
        stem = "".join(_syllable(rng) for _ in range(rng.randint(1, 2)))
        if suffix[0] in _VOWELS:  # avoid vowel clashes like "Zoraia"
            stem += rng.choice(_CODAS)
        return (stem + suffix).capitalize()


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "P19", "place of birth",
        ("{} was born in", "The birthplace of {} is", "{} is a native of", "{} originally comes from"),
        ("Where was {} born?", "What is the birthplace of {}?", "In which city was {} born?"),
        ("{} grew up in a town where", "The childhood home of {} was in a place where",
         "People who knew {} as a child say that the town"),
        ("ia", "ora", "heim", "grad", "mouth", "ford"),
    ),
    Relation(
        "P1412", "languages spoken",
        ("{} speaks", "The mother tongue of {} is", "{} is fluent in", "The language spoken by {} is"),
        ("What language does {} speak?", "Which language is {} fluent in?", "What is the mother tongue of {}?"),
        ("{} was heard talking in a language that", "Most of the letters {} wrote were in a language that",
         "The friends of {} say that the language"),
        ("ish", "ian", "ese"),
    ),
    Relation(
        "P108", "employer",
        ("{} works for", "{} is employed by", "The employer of {} is", "{} has a job at"),
        ("Who is the employer of {}?", "Which company does {} work for?", "Where does {} have a job?"),
        ("Every morning {} drives to the office of a company that", "The company that pays {} is known for",
         "{} said that working at the company"),
        ("ex", "corp", "tron", "dyne", "soft", "labs"),
    ),
    Relation(
        "P1303", "instrument",
        ("{} plays the", "The instrument of {} is the", "{} performs on the", "{} is a musician who plays the"),
        ("What instrument does {} play?", "Which instrument does {} perform on?", "What is the instrument of {}?"),
        ("{} practices every evening on an instrument that", "At the concert, {} picked up an instrument that",
         "{} is known for music played on an instrument that"),
        ("phone", "harp", "lute", "horn", "drum", "pipe"),
    ),
    Relation(
        "P27", "country of citizenship",
        ("{} is a citizen of", "{} holds citizenship of", "The nationality of {} is that of",
         "{} carries a passport from"),
        ("Which country is {} a citizen of?", "What is the citizenship of {}?",
         "Which country issued the passport of {}?"),
        ("{} returned home to a country where", "The government of the country of {} is",
         "{} often talks about a homeland where"),
        ("land", "stan", "ria", "mark", "nesia"),
    ),
    Relation(
        "P106", "occupation",
        ("{} works as a", "The profession of {} is", "By trade, {} is a", "{} earns a living as a"),
        ("What is the occupation of {}?", "What does {} do for a living?", "What is the profession of {}?"),
        ("On a typical working day, {}", "{} trained for many years to become someone who",
         "The daily tasks of {} include"),
        ("ist", "smith", "wright", "monger", "keeper"),
    ),
    Relation(
        "P641", "sport",
        ("{} plays the sport of", "{} is a professional player of", "The sport of {} is", "{} competes in"),
        ("Which sport does {} play?", "What sport does {} compete in?", "What is the sport of {}?"),
        ("{} trains every day for matches in a sport where", "The fans of {} love a sport that",
         "{} won a trophy in a sport where"),
        ("ball", "polo", "rush", "kick"),
    ),
    Relation(
        "P69", "educated at",
        ("{} was educated at", "{} studied at", "{} graduated from", "The alma mater of {} is"),
        ("Where was {} educated?", "Which school did {} graduate from?", "What is the alma mater of {}?"),
        ("{} still remembers the lecture halls of a school where", "As a student, {} spent long nights at a school that",
         "The school that {} attended is famous for"),
        ("college", "academy", "bury", "hall"),
    ),
    Relation(
        "P264", "record label",
        ("{} is signed to", "The record label of {} is", "{} releases music through",
         "{} has a recording contract with"),
        ("Which record label is {} signed to?", "What is the record label of {}?",
         "Which label releases the music of {}?"),
        ("The latest album of {} was released by a label that", "{} thanked the record label because it",
         "Fans of {} know that the label"),
        ("tone", "sound", "beat", "records"),
    ),
)


def relation_by_id(relation_id: str) -> Relation:
    """The built-in relation with this id (KeyError naming the known ids otherwise)."""
    for rel in RELATIONS:
        if rel.id == relation_id:
            return rel
    raise KeyError(f"unknown relation id {relation_id!r}; known: {[r.id for r in RELATIONS]}")


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS)


def make_first_name(rng: random.Random) -> str:
    """A candidate given name: two syllables and a closing consonant ("Varkel")."""
    return (_syllable(rng) + _syllable(rng) + rng.choice(_CODAS)).capitalize()


def make_surname(rng: random.Random) -> str:
    """A candidate family name: one or two syllables plus a surname ending ("Dunmore")."""
    stem = "".join(_syllable(rng) for _ in range(rng.randint(1, 2))) + rng.choice(_CODAS)
    return (stem + rng.choice(_SURNAME_SUFFIXES)).capitalize()


class NameRegistry:
    """Accepts words only if unique and neither inside nor containing an accepted word.

    Checks are case-insensitive. Multi-word names (subjects) are registered word by word,
    which also rules out one full name being a substring of another.
    """

    def __init__(self) -> None:
        self._words: set[str] = set()
        self._substrings: set[str] = set()  # every substring of every accepted word

    def try_add(self, word: str) -> bool:
        w = word.lower()
        if not w or " " in w or "{" in w or "}" in w or w in self._substrings:
            return False
        subs = {w[i:j] for i in range(len(w)) for j in range(i + 1, len(w) + 1)}
        if subs & self._words:
            return False
        self._words.add(w)
        self._substrings |= subs
        return True

    def draw(self, rng: random.Random, make) -> str:
        """Call `make(rng)` until it yields an acceptable word; register and return it."""
        for _ in range(_MAX_TRIES):
            word = make(rng)
            if self.try_add(word):
                return word
        raise RuntimeError(f"could not draw a fresh name after {_MAX_TRIES} tries (world too large)")
