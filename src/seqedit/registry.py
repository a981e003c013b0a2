"""Method registry: name -> config dataclass, editor class, label, description, kind.

The one source of the method list. Each method module calls `register_method` at import;
`seqedit.methods` imports every method module in the study's order (baselines first, then the
methods under study), so registration order is the order of tables, figures and the report.
A new method is one module, one `register_method` line, one import in `seqedit.methods` and
its hyperparameter files.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

KINDS = ("baseline", "method")  # a baseline of the papers' tables, or a method under study


@dataclass(frozen=True)
class MethodInfo:
    name: str
    config_cls: type
    editor_cls: type
    label: str  # as tables and figures name it
    description: str  # one sentence for the report's method list
    kind: str  # one of KINDS


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, config_cls: type, editor_cls: type, *, label: str, description: str,
                    kind: str = "method") -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"method name {name!r} must be lower-case snake_case")
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{name}: config class must be a dataclass")
    if kind not in KINDS:
        raise ValueError(f"{name}: kind must be one of {KINDS}, got {kind!r}")
    if not label or not description:
        raise ValueError(f"{name}: a label and a description are required")
    _METHODS[name] = MethodInfo(name, config_cls, editor_cls, label, description, kind)


def _registered() -> dict[str, MethodInfo]:
    import seqedit.methods  # noqa: F401  (registers every method)

    return _METHODS


def available_methods() -> list[str]:
    """Every registered method name, in the study's order (baselines first)."""
    methods = _registered()
    return sorted(methods, key=lambda m: KINDS.index(methods[m].kind))  # stable: registration order within a kind


def method_info(name: str) -> MethodInfo:
    methods = _registered()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]


def get_method(name: str) -> tuple[type, type]:
    info = method_info(name)
    return info.config_cls, info.editor_cls


def effective_settings(name: str, hparams: dict[str, Any], where: str = "hparams") -> dict[str, Any]:
    """The settings a method actually runs with: its config built from `hparams` (defaults
    filled in), with settings that cannot matter put in one canonical form by the config's
    optional `effective()` (e.g. NSE's `select_neurons` when p = 1 keeps every neuron).
    Two configurations with equal effective settings give the same run."""
    cfg = build_config(get_method(name)[0], hparams, where)
    return cfg.effective() if hasattr(cfg, "effective") else dataclasses.asdict(cfg)


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
