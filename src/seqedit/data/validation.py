"""Reading a benchmark JSON file and checking record fields, with errors that say where.

Shared by the CounterFact and ZsRE loaders. File-level problems (missing file, invalid or
truncated JSON, a top level that is not a list) raise FileNotFoundError / ValueError naming
the file; a bad record raises `RecordError` naming file, case id and (dotted) field.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

from seqedit.data.records import RecordError


def read_record_list(path: str | Path) -> list:
    """Parse `path` as a JSON list of records (the shape of both benchmark files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "dataset file not found", str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (truncated or corrupt?): {e.msg} at line {e.lineno} "
                         f"column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text): {e}") from e
    if not isinstance(data, list):
        raise ValueError(f"{path}: top level is a JSON {type(data).__name__}, expected a list of records")
    return data


def check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


_TYPE_NAMES = {str: "string", int: "integer", list: "list", dict: "object"}


class FieldChecker:
    """Typed field access for one record; every failure is a `RecordError` for that record."""

    def __init__(self, path: str | Path, case_id) -> None:
        self.path, self.case_id = str(path), case_id

    def error(self, field: str, problem: str) -> RecordError:
        return RecordError(self.path, self.case_id, field, problem)

    def get(self, obj: dict, key: str, kind: type, where: str = "", required: bool = True, default=None):
        """obj[key], checked to be of type `kind` (bool never counts as int)."""
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if required:
                raise self.error(name, "missing")
            return default
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got "
                                   f"{type(value).__name__} {value!r:.60}")
        return value

    def text(self, obj: dict, key: str, where: str = "", nonempty: bool = False, required: bool = True):
        """A string field; with `nonempty`, blank or whitespace-only strings are rejected."""
        value = self.get(obj, key, str, where, required)
        if value is not None and nonempty and not value.strip():
            raise self.error(f"{where}.{key}" if where else key, f"is empty or whitespace ({value!r})")
        return value

    def text_list(self, obj: dict, key: str, where: str = "", required: bool = True) -> tuple[str, ...]:
        """A list of strings (absent and not required -> empty tuple)."""
        value = self.get(obj, key, list, where, required, default=[])
        name = f"{where}.{key}" if where else key
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{i}]", f"expected string, got {type(item).__name__}")
        return tuple(value)


def check_unique_case_ids(path: str | Path, case_ids: list) -> None:
    """Raise `RecordError` on the first repeated case id (downstream code keys on it)."""
    first: dict = {}
    for index, cid in enumerate(case_ids):
        if cid in first:
            raise RecordError(str(path), cid, "case_id",
                              f"duplicate case id (records {first[cid]} and {index})")
        first[cid] = index
