"""The records a study uses: the first `limit` records of a benchmark file, copied unchanged.

The copy is what the corpus, the knowledge check and every edit run read, so all three see
the same records. Each record is parsed by its loader first, so a bad record fails here with
its file, case id and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqedit.data.validation import check_limit, read_record_list


def write_subset(path: str | Path, kind: str, out: str | Path, limit: int | None = None) -> int:
    """Write the first `limit` records of `path` (all if None) to `out` as JSON; return how many."""
    from seqedit.data import load_records

    check_limit(limit)
    raws = read_record_list(path)
    if limit is not None and limit > len(raws):
        raise ValueError(f"{path}: data.limit is {limit} but the file has only {len(raws)} records")
    raws = raws[:limit]
    if not raws:
        raise ValueError(f"{path}: no records to write (limit {limit})")
    load_records(path, kind, limit)  # validates exactly the records written
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes((json.dumps(raws, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return len(raws)
