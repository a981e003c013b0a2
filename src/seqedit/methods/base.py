"""The `Editor` seam every method implements, and the config shared by locate-then-edit methods.

An editor is built once per run and then called once per batch:

    editor = Editor(config, model, tokenizer, spec, stats, seed)
    editor.edit_batch(requests, round_)      # edits `model` in place, returns a small info dict

Sequential state (e.g. MEMIT-seq's accumulated previous-edit keys C_p) lives on the editor;
`state_dict` / `load_state_dict` let the runner checkpoint and resume it, and `param_names`
says which model parameters the method may change (the runner checkpoints only those).

Edits are computed in float64 and meant for a model held in float32 or wider, as the reference
makes them: `check_edit_dtype` refuses a lower weight dtype unless allowed, and then
`apply_layers` logs, per edited layer and round, how much of the computed update the stored
weights lost to rounding (`rounding`: ‖applied − computed‖ / ‖computed‖, the applied update
being the change of the stored weight).

Read `memit.py` first: it is the reference implementation of these seams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from seqedit.core.spread import SolveFn, edit_layers
from seqedit.core.stats import LayerStats
from seqedit.core.targets import MODES as TARGET_MODES
from seqedit.core.targets import TargetConfig
from seqedit.core.templates import generate_context_templates
from seqedit.data.records import EditRequest
from seqedit.models.arch import ModelSpec


LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_edit_dtype(model, allow_low_precision: bool = False) -> None:
    """Refuse to edit a model whose weights are held below float32, unless allowed."""
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.dtype in LOW_PRECISION})
    if dtypes and not allow_low_precision:
        raise ValueError(
            f"the model's weights are {'/'.join(dtypes)}: edits are computed in float64 and lose part of their norm "
            "when cast below float32; load the model in float32 (model.dtype) or set model.allow_low_precision_edits"
        )


class RoundingRecorder:
    """‖applied − computed‖ / ‖computed‖ per layer over one batch's updates, for weights held
    below float32 (nothing is kept for float32 or wider weights).

    `wrap(solve)` records the computed ΔW (as the solve returns it, before any cast to the
    weight dtype) summed over the batch's passes; `ratios()` compares that sum with the change
    of the stored weights since the recorder was made."""

    def __init__(self, model, spec: ModelSpec, layers):
        self.model, self.spec = model, spec
        self.active = any(spec.out_weight(model, l).dtype in LOW_PRECISION for l in layers)
        self.before = {l: spec.out_weight(model, l).detach().clone() for l in layers} if self.active else {}
        self.computed: dict[int, torch.Tensor] = {}

    def wrap(self, solve: SolveFn) -> SolveFn:
        if not self.active:
            return solve

        def recorded(layer, keys, resid):
            delta = solve(layer, keys, resid)  # (d_out, d_ff)
            d = delta.detach().double()
            self.computed[layer] = self.computed[layer] + d if layer in self.computed else d
            return delta

        return recorded

    def ratios(self) -> dict[int, float]:
        out = {}
        for l, computed in self.computed.items():
            applied = self.spec.out_weight(self.model, l).detach().double() - self.before[l].double()
            norm = float(computed.norm())
            out[l] = float((applied - computed.to(applied.device)).norm()) / norm if norm > 0 else 0.0
        return out


@dataclass
class LocateEditConfig:
    """Fields shared by MEMIT, AlphaEdit, NSE and NMKE (names follow the reference hparams)."""

    layers: list[int] = field(default_factory=lambda: [1, 2])
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    v_loss_layer: int = -1  # informational: the loss is read from the final logits
    mom2_update_weight: float = 20000.0
    n_context_templates: int = 5
    context_template_length: int = 10
    target_mode: str = "fast"  # "fast" | "reference" (alias "batched") | "per_request" (core/targets.py)

    def __post_init__(self):
        if not self.layers or sorted(set(self.layers)) != list(self.layers):
            raise ValueError(f"layers must be a non-empty ascending list without repeats, got {self.layers}")
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {list(TARGET_MODES)}, got {self.target_mode!r}")
        if self.v_num_grad_steps < 1:
            raise ValueError("v_num_grad_steps must be >= 1")
        if self.mom2_update_weight < 0:
            raise ValueError("mom2_update_weight must be >= 0")

    def effective(self) -> dict:
        """The settings as they act (registry.effective_settings): with no context templates their
        length does not matter, and `v_loss_layer` is informational."""
        out = dataclasses.asdict(self)
        out.pop("v_loss_layer")
        if self.n_context_templates == 0:
            out["context_template_length"] = None
        return out

    def target_config(self) -> TargetConfig:
        return TargetConfig(
            layer=self.layers[-1], n_steps=self.v_num_grad_steps, lr=self.v_lr, weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor, kl_factor=self.kl_factor,
        )


class Editor:
    """Base class. Subclasses set `name` and implement `edit_batch`."""

    name = "base"

    def __init__(self, config, model, tokenizer, spec: ModelSpec, stats: LayerStats | None, seed: int = 0):
        self.config, self.model, self.tokenizer, self.spec, self.stats, self.seed = (
            config, model, tokenizer, spec, stats, seed,
        )
        layers = getattr(config, "layers", None)
        if layers is not None:
            spec.check_layers(model, layers)

    # --- seams --------------------------------------------------------------------------
    def edit_batch(self, requests: list[EditRequest], round_: int) -> dict:
        raise NotImplementedError

    def param_names(self) -> list[str]:
        """Parameters this method may modify (default: W_out of the edited layers)."""
        return [self.spec.out_weight_name(l) for l in self.config.layers]

    def state_dict(self) -> dict:
        """Sequential state to checkpoint; subclasses extend it. Templates are part of it:
        regenerating them after a resume would sample from the edited model."""
        return {"templates": getattr(self, "_templates", None)}

    def load_state_dict(self, state: dict) -> None:
        self._templates = state.get("templates")

    # --- helpers shared by several methods -------------------------------------------------
    def apply_layers(self, requests, z: torch.Tensor, templates, solve: SolveFn,
                     layers=None) -> tuple[dict[int, torch.Tensor], dict]:
        """`edit_layers` over `layers` (default: the config's) with `solve`; returns the deltas
        and the round-info entry `rounding` (layer -> ratio) when the weights are below float32."""
        layers = self.config.layers if layers is None else layers
        recorder = RoundingRecorder(self.model, self.spec, layers)
        deltas = edit_layers(self.model, self.tokenizer, self.spec, requests, z, layers, templates, recorder.wrap(solve))
        return deltas, ({"rounding": recorder.ratios()} if recorder.active else {})

    def context_templates(self) -> list[list[str]]:
        """Generated once per run, from the model as it is at the first call (θ₀), and seeded."""
        if getattr(self, "_templates", None) is None:
            cfg = self.config
            self._templates = generate_context_templates(
                self.model, self.tokenizer, cfg.n_context_templates, cfg.context_template_length, seed=self.seed
            )
        return self._templates

    def require_stats(self, layers) -> LayerStats:
        if self.stats is None:
            raise ValueError(f"{self.name} needs layer statistics; none were given")
        missing = [l for l in layers if l not in self.stats.mom2]
        if missing:
            raise ValueError(f"{self.name}: the layer statistics lack layers {missing} (have {self.stats.layers})")
        for l in layers:
            if not torch.isfinite(self.stats.mom2[l]).all():
                raise ValueError(f"{self.name}: layer {l}: the layer statistics hold non-finite values; collect them again")
        return self.stats

    def check_d_ff(self, cov: torch.Tensor, layer: int) -> None:
        d_ff = self.spec.d_ff(self.model)
        if cov.shape != (d_ff, d_ff):
            raise ValueError(f"{self.name}: statistics of layer {layer} are {tuple(cov.shape)}, the model has d_ff={d_ff}")
