"""Loader for ROME's CounterFact schema (real `counterfact*.json` and the synthetic world).

Record shape: `case_id`, `pararel_idx`, `requested_rewrite {prompt, relation_id,
target_new {str, id}, target_true {str, id}, subject}`, `paraphrase_prompts`,
`neighborhood_prompts`, `attribute_prompts`, `generation_prompts`.

`attribute_prompts` and `generation_prompts` may be absent (empty tuples); everything else
is required. Fields that `EditRecord` has no slot for (`pararel_idx`, target ids, unknown
keys) are kept in `EditRecord.extra`.
"""

from __future__ import annotations

from pathlib import Path

from seqedit.data.records import EditRecord, EditRequest, RecordError
from seqedit.data.validation import FieldChecker, check_limit, check_unique_case_ids, read_record_list

_KNOWN_KEYS = {"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
               "attribute_prompts", "generation_prompts"}


def _check_prompt(fc: FieldChecker, prompt: str) -> None:
    """The rewrite prompt must take the subject via exactly one "{}" and `str.format`."""
    n = prompt.count("{}")
    if n != 1:
        raise fc.error("requested_rewrite.prompt", f"must contain exactly one '{{}}', found {n}: {prompt!r}")
    if "{" in prompt.replace("{}", "") or "}" in prompt.replace("{}", ""):
        raise fc.error("requested_rewrite.prompt", f"has braces other than the '{{}}' placeholder: {prompt!r}")


def parse_counterfact_record(raw, index: int, path: str | Path) -> EditRecord:
    """One CounterFact dict -> `EditRecord` (kind "counterfact"), or `RecordError`."""
    if not isinstance(raw, dict):
        raise RecordError(str(path), index, "<record>", f"expected an object, got {type(raw).__name__}")
    case_id = raw.get("case_id", index)
    fc = FieldChecker(path, case_id if isinstance(case_id, int) and not isinstance(case_id, bool) else index)
    case_id = fc.get(raw, "case_id", int)
    rw = fc.get(raw, "requested_rewrite", dict)
    where = "requested_rewrite"
    prompt = fc.text(rw, "prompt", where)
    _check_prompt(fc, prompt)
    subject = fc.text(rw, "subject", where, nonempty=True)
    relation_id = fc.text(rw, "relation_id", where)
    new = fc.get(rw, "target_new", dict, where)
    true = fc.get(rw, "target_true", dict, where)
    request = EditRequest(
        case_id=case_id,
        prompt=prompt,
        subject=subject,
        target_new=fc.text(new, "str", f"{where}.target_new", nonempty=True),
        target_true=fc.text(true, "str", f"{where}.target_true", nonempty=True),
        relation_id=relation_id,
    )
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS}
    for name, target in (("target_new", new), ("target_true", true)):
        target_id = fc.text(target, "id", f"{where}.{name}", required=False)
        if target_id is not None:
            extra[f"{name}_id"] = target_id
    return EditRecord(
        request=request,
        kind="counterfact",
        paraphrase_prompts=fc.text_list(raw, "paraphrase_prompts"),
        neighborhood_prompts=fc.text_list(raw, "neighborhood_prompts"),
        neighborhood_answer=None,
        attribute_prompts=fc.text_list(raw, "attribute_prompts", required=False),
        generation_prompts=fc.text_list(raw, "generation_prompts", required=False),
        extra=extra,
    )


def load_counterfact(path: str | Path, limit: int | None = None) -> list[EditRecord]:
    """All records of a CounterFact-schema file (the first `limit` if given), in file order.

    Every record loads or the call raises: nothing is skipped silently.
    """
    check_limit(limit)
    raws = read_record_list(path)
    if limit is not None:
        raws = raws[:limit]
    records = [parse_counterfact_record(raw, i, path) for i, raw in enumerate(raws)]
    check_unique_case_ids(path, [r.case_id for r in records])
    return records
