"""Method registry: name -> (config dataclass, editor class).

Each method module calls `register_method` once at import; `seqedit.methods` imports every
method module explicitly, so the list of methods is in one greppable place.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_METHODS: dict[str, tuple[type, type]] = {}


def register_method(name: str, config_cls: type, editor_cls: type) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"method name {name!r} must be lower-case snake_case")
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{name}: config class must be a dataclass")
    _METHODS[name] = (config_cls, editor_cls)


def available_methods() -> list[str]:
    import seqedit.methods  # noqa: F401  (registers every method)

    return sorted(_METHODS)


def get_method(name: str) -> tuple[type, type]:
    import seqedit.methods  # noqa: F401

    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def build_config(config_cls: type, values: dict[str, Any], where: str):
    """Instantiate a config dataclass from a dict; an unknown key or a wrong type is an error."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = getattr(config_cls, key, None) if not isinstance(fields[key].default, dataclasses._MISSING_TYPE) else None
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{where}.{key}: expected true/false, got {value!r}")
        if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, int) and not isinstance(default, bool) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
        elif isinstance(default, float) and not isinstance(value, float):
            raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
        kwargs[key] = value
    return config_cls(**kwargs)
