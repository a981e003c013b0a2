"""Loader for CounterFact in EasyEdit's reduced form (`counterfact-{train,val,edit}.json`).

Record shape: `case_id`, `prompt` (the rewrite prompt with the subject written in),
`subject`, `target_new`, `ground_truth`, `rephrase_prompt`, `locality_prompt`,
`locality_ground_truth`. The three splits together hold every CounterFact case (case_id
0-21918) once, each cut down to one paraphrase and one neighbourhood prompt.

Mapping onto `EditRecord` (kind "counterfact", so it is scored as CounterFact): prompt =
`prompt` with the subject's first occurrence replaced by "{}"; target_true =
`ground_truth`; paraphrase = (rephrase_prompt,); neighborhood = (locality_prompt,), whose
answer must be `ground_truth` (CounterFact scores a neighbourhood prompt against the true
object). No attribute or generation prompts and no relation or target ids: the form has none.

`path` is one such file, or a folder holding the three splits, read together and sorted by
case_id.
"""

from __future__ import annotations

from pathlib import Path

from seqedit.data.records import EditRecord, EditRequest, RecordError
from seqedit.data.validation import FieldChecker, check_limit, check_unique_case_ids, read_record_list

SPLITS = ("counterfact-train.json", "counterfact-val.json", "counterfact-edit.json")
_KNOWN_KEYS = {"case_id", "prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
               "locality_prompt", "locality_ground_truth"}


def read_easyedit_raws(path: str | Path) -> list:
    """The raw records of one file, or of a folder's three splits sorted by case_id."""
    path = Path(path)
    if not path.is_dir():
        return read_record_list(path)
    missing = [name for name in SPLITS if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: the EasyEdit CounterFact folder lacks {', '.join(missing)}")
    raws = [raw for name in SPLITS for raw in read_record_list(path / name)]
    # sorted by case_id where every record has an integer one; a bad record fails in the parser
    if all(isinstance(r, dict) and type(r.get("case_id")) is int for r in raws):
        raws.sort(key=lambda r: r["case_id"])
    return raws


def parse_easyedit_record(raw, index: int, path: str | Path) -> EditRecord:
    """One EasyEdit CounterFact dict -> `EditRecord` (kind "counterfact"), or `RecordError`."""
    if not isinstance(raw, dict):
        raise RecordError(str(path), index, "<record>", f"expected an object, got {type(raw).__name__}")
    case_id = raw.get("case_id", index)
    fc = FieldChecker(path, case_id if type(case_id) is int else index)
    case_id = fc.get(raw, "case_id", int)
    subject = fc.text(raw, "subject", nonempty=True)
    prompt = fc.text(raw, "prompt", nonempty=True)
    if subject not in prompt:
        raise fc.error("prompt", f"does not contain the subject {subject!r}: {prompt!r}")
    if "{" in prompt or "}" in prompt:
        raise fc.error("prompt", f"contains braces, which would break the '{{}}' prompt template: {prompt!r}")
    true = fc.text(raw, "ground_truth", nonempty=True)
    locality_answer = fc.text(raw, "locality_ground_truth", nonempty=True)
    if locality_answer != true:
        raise fc.error("locality_ground_truth", f"is {locality_answer!r}, not the true object {true!r} "
                                                "(the neighbourhood prompt is scored against it)")
    request = EditRequest(
        case_id=case_id,
        prompt=prompt.replace(subject, "{}", 1),
        subject=subject,
        target_new=fc.text(raw, "target_new", nonempty=True),
        target_true=true,
        relation_id=None,
    )
    return EditRecord(
        request=request,
        kind="counterfact",
        paraphrase_prompts=(fc.text(raw, "rephrase_prompt", nonempty=True),),
        neighborhood_prompts=(fc.text(raw, "locality_prompt", nonempty=True),),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
    )


def load_counterfact_easyedit(path: str | Path, limit: int | None = None) -> list[EditRecord]:
    """All records of an EasyEdit CounterFact file or folder (the first `limit` if given).

    Every record loads or the call raises: nothing is skipped silently.
    """
    check_limit(limit)
    raws = read_easyedit_raws(path)
    if limit is not None:
        raws = raws[:limit]
    records = [parse_easyedit_record(raw, i, path) for i, raw in enumerate(raws)]
    check_unique_case_ids(path, [r.case_id for r in records])
    return records
