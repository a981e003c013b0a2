"""Forward hooks as context managers: read a module's input/output, or rewrite its output.

Hooks are always removed in `finally`, so an exception inside the block leaves the model
clean. Block outputs may be a tensor or a tuple whose first element is the hidden state
(the layout differs across transformers versions); both are handled.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


@contextmanager
def capture(model: nn.Module, names: Iterable[str], what: str = "output", detach: bool = True):
    """Record the input (`what="input"`) or output of each named module during the block.

    Yields a dict name -> tensor, filled by the forward passes run inside the block
    (the last pass wins).
    """
    if what not in ("input", "output"):
        raise ValueError("what must be 'input' or 'output'")
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make(name):
        def hook(_mod, inputs, output):
            t = _first(inputs) if what == "input" else _first(output)
            store[name] = t.detach() if detach else t

        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(make(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def edit_output(model: nn.Module, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the hidden-state output `h` of module `name` by `fn(h)` during the block."""

    def hook(_mod, _inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]),) + tuple(output[1:])
        return fn(output)

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def edit_input(model: nn.Module, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the first positional input `x` of module `name` by `fn(x)` during the block."""

    def pre_hook(_mod, args):
        return (fn(args[0]),) + tuple(args[1:])

    handle = model.get_submodule(name).register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


class _ForwardStopped(Exception):
    """Raised from a hook to end a forward pass once everything it had to read has run."""


@contextmanager
def stop_after(model: nn.Module, names: Iterable[str]):
    """End the forward pass run inside the block once each named module has run.

    The hook raises after the last of `names` to finish; the exception is caught when the
    block exits, so no later module (later blocks, final norm, unembedding) runs, and the
    model call is the last statement of the block that executes: one forward per block, and
    what `capture` recorded is read after the `with`. Hooks registered earlier on the same
    module (e.g. by an enclosing `capture`) run first.
    """
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("stop_after needs at least one module name")
    seen: set[str] = set()
    handles = []

    def make(name):
        def hook(_mod, _inputs, _output):
            seen.add(name)
            if len(seen) == len(names):
                seen.clear()
                raise _ForwardStopped

        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(make(name)))
        try:
            yield
        except _ForwardStopped:
            pass
    finally:
        for h in handles:
            h.remove()
