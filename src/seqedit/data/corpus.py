"""The training corpus of benchmark records: one line per fact the records state as true.

A testbed trained from scratch knows only what its corpus says, so for real CounterFact or
ZsRE records the corpus states exactly what the knowledge check (`seqedit.knowledge`) asks,
with the prompt text the evaluation feeds the model, followed by " " + answer + ".":

- CounterFact: the rewrite query, each paraphrase and each neighbourhood prompt with
  target_true (neighbours share it); each attribute prompt with target_new (attribute
  prompts are other subjects whose true object is target_new).
- ZsRE: `src` and `rephrase` with target_true (the file's `pred`), and the `loc` question
  as scored (`loc + "?"`, "nq question: " prefix kept) with `loc_ans`; then the edit target
  named on its own, `"See also: " + target_new + "."`. ZsRE's targets are rare names (taxa,
  bands, people) that no other line states. Without this line the testbed has never seen
  them, so their later tokens are continuations it cannot produce (5.0 pieces per target on
  average with the testbed's tokenizer, "Lecanorales" six): an edit would have to teach the
  spelling as well as the fact, and after 120 edits every closed-form method stayed near the
  pre-edit token accuracy (efficacy 5.2-9.3 % vs 10.1 % before editing). A pretrained model
  knows such names; a testbed trained with this line does too. The line ties the name to no
  subject, so the new fact itself is never stated. CounterFact needs no such line: its
  attribute prompts already state target_new (about other subjects).

Lines keep record order (rewrite, paraphrases, neighbours, then attributes or the target's
name); a repeated line is written once. `corpus.txt` holds one text per line: a line break
inside a text (CounterFact paraphrase prefixes carry newlines) is written as the escape `\\n`
(`\\r`, `\\uXXXX` for the rarer ones) and a backslash as `\\\\`; `read_corpus` undoes this.
The synthetic world's corpus has neither, so it reads back unchanged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from seqedit.data.records import EditRecord

# Characters str.splitlines() breaks on; inside a corpus text each is escaped.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPE = re.compile(r"\\(\\|n|r|u[0-9a-f]{4})")
# The carrier of a ZsRE edit target named on its own (see the module docstring).
NAME_PROMPT = "See also:"


@dataclass(frozen=True)
class CorpusSummary:
    n_records: int
    n_lines: int
    n_repeated: int  # lines left out because an earlier record stated them already
    n_conflicting: int  # prompts stated with more than one answer (multi-valued relations)
    max_chars: int  # length of the longest text


def fact_line(prompt: str, answer: str) -> str:
    """`prompt + " " + answer`, closed with "." unless the answer ends in . ! or ?."""
    text = f"{prompt} {answer}"
    return text if answer.endswith((".", "!", "?")) else text + "."


def record_facts(record: EditRecord) -> list[tuple[str, str]]:
    """The (prompt, answer) pairs one record states as true, in corpus order."""
    req = record.request
    if req.target_true is None:
        raise ValueError(f"case {record.case_id}: no true target (ZsRE field 'pred') to state in the corpus")
    facts = [(req.query, req.target_true)]
    facts += [(p, req.target_true) for p in record.paraphrase_prompts]
    if record.kind == "counterfact":
        facts += [(p, req.target_true) for p in record.neighborhood_prompts]
        facts += [(p, req.target_new) for p in record.attribute_prompts]
    elif record.kind == "zsre":
        facts += [(p, record.neighborhood_answer) for p in record.neighborhood_prompts]
        facts.append((NAME_PROMPT, req.target_new))
    else:
        raise ValueError(f"case {record.case_id}: unknown record kind {record.kind!r}")
    return facts


def corpus_lines(records: list[EditRecord]) -> tuple[list[str], CorpusSummary]:
    """Corpus texts (not yet escaped) of `records`, and what they hold."""
    lines: list[str] = []
    seen: set[str] = set()
    answers: dict[str, set[str]] = {}
    n_repeated = 0
    for record in records:
        for prompt, answer in record_facts(record):
            if prompt != NAME_PROMPT:  # one carrier for every target name: not a conflict
                answers.setdefault(prompt, set()).add(answer)
            line = fact_line(prompt, answer)
            if line in seen:
                n_repeated += 1
                continue
            seen.add(line)
            lines.append(line)
    summary = CorpusSummary(
        n_records=len(records),
        n_lines=len(lines),
        n_repeated=n_repeated,
        n_conflicting=sum(len(a) > 1 for a in answers.values()),
        max_chars=max((len(line) for line in lines), default=0),
    )
    return lines, summary


def escape_line(text: str) -> str:
    """`text` as one corpus line: backslashes and line breaks escaped."""
    return "".join(_ESCAPES.get(ch, f"\\u{ord(ch):04x}" if ch in _LINE_BREAKS else ch) for ch in text)


def unescape_line(line: str) -> str:
    """The text a corpus line stands for (inverse of `escape_line`)."""

    def one(match: re.Match) -> str:
        code = match.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r"}.get(code) or chr(int(code[1:], 16))

    return _UNESCAPE.sub(one, line) if "\\" in line else line


def write_corpus(texts: list[str], path: str | Path) -> Path:
    """Write `texts` one per line (escaped, UTF-8, final newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("".join(escape_line(t) + "\n" for t in texts)).encode("utf-8"))
    return path


def read_corpus(path: str | Path) -> list[str]:
    """The texts of a corpus file, one per line, escapes undone."""
    return [unescape_line(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def write_records_corpus(records_path: str | Path, kind: str, out: str | Path, limit: int | None = None) -> dict:
    """Write the corpus of a benchmark file's records (the first `limit`) to `out`; return its summary."""
    from seqedit.data import load_records

    records = load_records(records_path, kind, limit)
    if not records:
        raise ValueError(f"{records_path}: no records to write a corpus from")
    try:
        lines, summary = corpus_lines(records)
    except ValueError as err:
        raise ValueError(f"{records_path}: {err}") from None
    write_corpus(lines, out)
    return asdict(summary)
