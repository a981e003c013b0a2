"""The records a study uses: the first `limit` records of a benchmark file, copied unchanged.

The copy is what the corpus, the knowledge check and every edit run read, so all three see
the same records. Each record is parsed by its loader first, so a bad record fails here with
its file, case id and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqedit.data.validation import check_limit


def write_subset(
    path: str | Path, kind: str, out: str | Path, limit: int | None = None, drop_unchanged: bool = False
) -> tuple[int, int]:
    """Write the first `limit` records of `path` (all if None) to `out` as JSON.

    With `drop_unchanged`, records whose edit target equals their true answer (in ZsRE, `pred`
    == answers[0]: editing them changes nothing) are left out first, and `limit` counts the
    rest. Returns (records written, records left out).
    """
    from seqedit.data import load_records, read_raw_records

    check_limit(limit)
    raws = read_raw_records(path, kind)
    dropped = 0
    if drop_unchanged:  # which records are unchanged needs every record parsed
        keep = [r.request.target_new != r.request.target_true for r in load_records(path, kind)]
        dropped = keep.count(False)
        raws = [raw for raw, k in zip(raws, keep) if k]
    if limit is not None and limit > len(raws):
        what = "records with a changed target" if drop_unchanged else "records"
        raise ValueError(f"{path}: data.limit is {limit} but the file has only {len(raws)} {what}")
    raws = raws[:limit]
    if not raws:
        raise ValueError(f"{path}: no records to write (limit {limit})")
    if not drop_unchanged:
        load_records(path, kind, limit)  # validates exactly the records written
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes((json.dumps(raws, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return len(raws), dropped
