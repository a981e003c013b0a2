"""Loader for MEND's ZsRE schema (`zsre_mend_eval*.json`, EasyEdit copies, synthetic world).

Record shape: `subject`, `src`, `rephrase`, `answers`, `loc` ("nq question: ..."),
`loc_ans`, and optionally `pred`, `alt`, `case_id`, `cond`, `portability`, ...

Mapping (as ROME/MEMIT's `MENDQADataset`): prompt = `src` with the first occurrence of the
subject replaced by "{}"; target_new = answers[0]; target_true = `pred` when present
(ROME uses a placeholder instead); paraphrase = (rephrase,); neighborhood = (loc + "?",)
with answer `loc_ans`. case_id = the record's `case_id` if present, else its index.
Unmapped keys are kept in `EditRecord.extra`.
"""

from __future__ import annotations

from pathlib import Path

from seqedit.data.records import EditRecord, EditRequest, RecordError
from seqedit.data.validation import FieldChecker, check_limit, check_unique_case_ids, read_record_list

_KNOWN_KEYS = {"case_id", "subject", "src", "rephrase", "answers", "pred", "loc", "loc_ans"}


def parse_zsre_record(raw, index: int, path: str | Path) -> EditRecord:
    """One ZsRE dict -> `EditRecord` (kind "zsre"), or `RecordError`."""
    if not isinstance(raw, dict):
        raise RecordError(str(path), index, "<record>", f"expected an object, got {type(raw).__name__}")
    case_id = raw.get("case_id", index)
    fc = FieldChecker(path, case_id if isinstance(case_id, int) and not isinstance(case_id, bool) else index)
    case_id = fc.get(raw, "case_id", int, required=False, default=index)
    subject = fc.text(raw, "subject", nonempty=True)
    src = fc.text(raw, "src", nonempty=True)
    if subject not in src:
        raise fc.error("src", f"does not contain the subject {subject!r}: {src!r}")
    if "{" in src or "}" in src:
        raise fc.error("src", f"contains braces, which would break the '{{}}' prompt template: {src!r}")
    answers = fc.get(raw, "answers", list)
    if not answers:
        raise fc.error("answers", "is empty (answers[0] is the edit target)")
    if not isinstance(answers[0], str) or not answers[0].strip():
        raise fc.error("answers[0]", f"must be a non-empty string, got {answers[0]!r}")
    loc = fc.text(raw, "loc", nonempty=True)
    if "nq question:" not in loc:
        raise fc.error("loc", f"is not an NQ question (no 'nq question:'): {loc!r}")
    request = EditRequest(
        case_id=case_id,
        prompt=src.replace(subject, "{}", 1),
        subject=subject,
        target_new=answers[0],
        target_true=fc.text(raw, "pred", nonempty=True, required=False),
        relation_id=None,
    )
    return EditRecord(
        request=request,
        kind="zsre",
        paraphrase_prompts=(fc.text(raw, "rephrase", nonempty=True),),
        neighborhood_prompts=(loc + "?",),
        neighborhood_answer=fc.text(raw, "loc_ans", nonempty=True),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
    )


def load_zsre(path: str | Path, limit: int | None = None) -> list[EditRecord]:
    """All records of a ZsRE-schema file (the first `limit` if given), in file order.

    Every record loads or the call raises: nothing is skipped silently.
    """
    check_limit(limit)
    raws = read_record_list(path)
    if limit is not None:
        raws = raws[:limit]
    records = [parse_zsre_record(raw, i, path) for i, raw in enumerate(raws)]
    check_unique_case_ids(path, [r.case_id for r in records])
    return records
