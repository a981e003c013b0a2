"""The edit record: one fact to rewrite plus the prompts that test it.

Both benchmark schemas (CounterFact in ROME's form, ZsRE in MEND's form) are mapped onto
`EditRecord`, so methods and evaluation never see a raw JSON dict.

Text conventions (as in ROME/MEMIT):
- `prompt` holds the subject placeholder "{}"; `prompt.format(subject)` is the query.
- Targets are stored without a leading space; the text that follows a prompt is
  `" " + target` (see `EditRequest.new_text` / `true_text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class RecordError(ValueError):
    """A dataset record is malformed. The message names file, case id and field."""

    def __init__(self, path: str, case_id, field_name: str, problem: str):
        self.path, self.case_id, self.field_name = str(path), case_id, field_name
        super().__init__(f"{path}: case {case_id}: field '{field_name}': {problem}")


@dataclass(frozen=True)
class EditRequest:
    """What an editor needs: rewrite `subject`'s answer to `prompt` into `target_new`."""

    case_id: int
    prompt: str  # contains exactly one "{}" where the subject goes
    subject: str
    target_new: str
    target_true: str | None = None  # None where the benchmark has no true answer (ZsRE)
    relation_id: str | None = None

    @property
    def query(self) -> str:
        return self.prompt.format(self.subject)

    @property
    def new_text(self) -> str:
        return " " + self.target_new

    @property
    def true_text(self) -> str | None:
        return None if self.target_true is None else " " + self.target_true


@dataclass(frozen=True)
class EditRecord:
    """An `EditRequest` with its evaluation prompts.

    kind = "counterfact": neighborhood prompts are other subjects whose correct answer is
    `target_true`; success there means P(true) > P(new).
    kind = "zsre": `neighborhood_prompts` holds one NQ question and `neighborhood_answer`
    its gold answer; scored by teacher-forced token accuracy.
    """

    request: EditRequest
    kind: str  # "counterfact" | "zsre"
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    neighborhood_answer: str | None = None  # ZsRE: loc_ans
    attribute_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def case_id(self) -> int:
        return self.request.case_id
