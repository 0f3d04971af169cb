"""LoRA for one linear layer: the one adapter specification, its state dict, and the merge.

Conventions (PEFT's, and microsoft/LoRA's):
    base weight W: (d_out, d_in), base(x) = x·Wᵀ
    lora_A: (r, d_in), lora_B: (d_out, r), scaling from SCALING_RULES (alpha / r)
    ΔW = scaling · lora_B·lora_A, shape (d_out, d_in)
    out = base(x) + scaling · (x·lora_Aᵀ)·lora_Bᵀ
DoRA (spec.dora) adds a magnitude m (d_out,) and rescales each output row:
    W' = (m / n)[:, None] ⊙ (W + ΔW), n = ‖W + ΔW‖ per row (dim=1), detached in training
Adapter tensors travel as a state dict under PEFT's key names (`state_dict`), from
training through checkpoints, export, load checks and `merge`. The torch module that
applies an adapter is `LoRALinear` in core/modules.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # torch is not imported here: config validation reads SCALING_RULES without it
    import torch

MODULE = "linear"  # the adapted module's name in PEFT keys
KEY_A = f"base_model.model.{MODULE}.lora_A.weight"
KEY_B = f"base_model.model.{MODULE}.lora_B.weight"
KEY_M = f"base_model.model.{MODULE}.lora_magnitude_vector"  # DoRA's m; PEFT saves it without ".weight"

class ScalingRule(NamedTuple):
    fn: Callable[[float, int], float]  # (alpha, rank) -> scaling
    help: str


# a new rule is one entry
SCALING_RULES: dict[str, ScalingRule] = {
    "standard": ScalingRule(lambda alpha, rank: alpha / rank, "alpha / rank, as in the LoRA paper and PEFT"),
    "rslora": ScalingRule(lambda alpha, rank: alpha / math.sqrt(rank), "alpha / √rank (rsLoRA; PEFT's use_rslora)"),
}


@dataclass(frozen=True)
class AdapterSpec:
    """What defines an adapter besides its tensors; every part of lora reads it from here."""

    rank: int
    alpha: float
    init: str = "normal"  # an entry of core/inits.INITS
    scaling_rule: str = "standard"  # an entry of SCALING_RULES
    lr_ratio: float = 1.0  # LoRA+: lora_B (and DoRA's m) learn at lr·lr_ratio, lora_A at lr (1: plain LoRA)
    dora: bool = False  # DoRA: a trained magnitude per output row (PEFT's use_dora)

    @property
    def scaling(self) -> float:
        return SCALING_RULES[self.scaling_rule].fn(self.alpha, self.rank)

    def parameter_count(self, d_in: int, d_out: int) -> int:
        """Trainable numbers of the adapter."""
        return low_rank_size(self.rank, d_in, d_out) + (d_out if self.dora else 0)


def low_rank_size(rank: int, d_in: int, d_out: int) -> int:
    """Numbers in a rank-r factorisation of a d_out x d_in matrix: r·(d_in + d_out)."""
    return rank * (d_in + d_out)


def state_dict(lora_A: torch.Tensor, lora_B: torch.Tensor, magnitude: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The adapter as PEFT keys it: lora_A (r, d_in), lora_B (d_out, r), DoRA's m (d_out,)."""
    tensors = {KEY_A: lora_A.detach().contiguous(), KEY_B: lora_B.detach().contiguous()}
    if magnitude is not None:
        tensors[KEY_M] = magnitude.detach().contiguous()
    return tensors


def low_rank_delta(spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> torch.Tensor:
    """scaling · B·A, shape (d_out, d_in): all of ΔW for plain LoRA."""
    return spec.scaling * (adapter[KEY_B] @ adapter[KEY_A])


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """‖weight[i, :]‖ for each output row i: DoRA's n, and its m at step 0."""
    import torch

    return torch.linalg.norm(weight, dim=1)


def merged_weight(weight: torch.Tensor, spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> torch.Tensor:
    """W' = W + s·B·A, rescaled row by row to DoRA's magnitude when spec.dora."""
    updated = weight + low_rank_delta(spec, adapter)
    if not spec.dora:
        return updated
    return (adapter[KEY_M] / row_norms(updated))[:, None] * updated


def delta_weight(weight: torch.Tensor, spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> torch.Tensor:
    """ΔW = W' − W, shape (d_out, d_in): what the adapter changes in the base `weight`."""
    if not spec.dora:
        return low_rank_delta(spec, adapter)
    return merged_weight(weight, spec, adapter) - weight


def expected_shapes(spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
    """Each tensor an adapter of `spec` holds for a d_out x d_in base, and its shape."""
    return {KEY_A: (spec.rank, d_in), KEY_B: (d_out, spec.rank)} | ({KEY_M: (d_out,)} if spec.dora else {})


def check_shapes(weight_shape: tuple[int, ...], spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> str | None:
    """What in the adapter does not fit a rank-r adapter (of `spec`) on a base weight of
    `weight_shape`, worded; None when everything fits."""
    d_out, d_in = weight_shape
    expected = expected_shapes(spec, d_in, d_out)
    for key, shape in expected.items():
        if key not in adapter:
            return f"has no tensor {key}"
        if tuple(adapter[key].shape) != shape:
            return f"{key} has shape {tuple(adapter[key].shape)}, not {shape} (rank {spec.rank} on a {d_out}x{d_in} base)"
    extra = sorted(set(adapter) - set(expected))
    return f"has tensors a rank-{spec.rank} {'DoRA' if spec.dora else 'LoRA'} adapter does not: {', '.join(extra)}" if extra else None


def merge(base: dict[str, torch.Tensor], spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"weight": W'} as new tensors; the inputs are not modified.

    Raises:
        ValueError: when the adapter's shapes do not fit the base weight.
    """
    weight = base["weight"]
    problem = check_shapes(tuple(weight.shape), spec, adapter)
    if problem:
        raise ValueError(f"the adapter {problem}")
    return {"weight": merged_weight(weight, spec, adapter)}
