"""LoRA for one linear layer: the one adapter specification, its state dict, and the merge.

Conventions (PEFT's, and microsoft/LoRA's):
    base weight W: (d_out, d_in), base(x) = x·Wᵀ
    lora_A: (r, d_in), lora_B: (d_out, r), scaling from SCALING_RULES (alpha / r)
    ΔW = scaling · lora_B·lora_A, shape (d_out, d_in)
    out = base(x) + scaling · (x·lora_Aᵀ)·lora_Bᵀ
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
    lr_ratio: float = 1.0  # LoRA+: lora_B learns at lr·lr_ratio, lora_A at lr (1: plain LoRA)

    @property
    def scaling(self) -> float:
        return SCALING_RULES[self.scaling_rule].fn(self.alpha, self.rank)

    def parameter_count(self, d_in: int, d_out: int) -> int:
        """Trainable numbers of the adapter."""
        return low_rank_size(self.rank, d_in, d_out)


def low_rank_size(rank: int, d_in: int, d_out: int) -> int:
    """Numbers in a rank-r factorisation of a d_out x d_in matrix: r·(d_in + d_out)."""
    return rank * (d_in + d_out)


def state_dict(lora_A: torch.Tensor, lora_B: torch.Tensor) -> dict[str, torch.Tensor]:
    """The adapter as PEFT keys it: lora_A (r, d_in), lora_B (d_out, r)."""
    return {KEY_A: lora_A.detach().contiguous(), KEY_B: lora_B.detach().contiguous()}


def delta_weight(spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> torch.Tensor:
    """ΔW = scaling · B·A, shape (d_out, d_in)."""
    return spec.scaling * (adapter[KEY_B] @ adapter[KEY_A])


def merge(base: dict[str, torch.Tensor], spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"weight": W + ΔW} as new tensors; the inputs are not modified.

    Raises:
        ValueError: when the adapter's shapes do not fit the base weight.
    """
    weight = base["weight"]
    d_out, d_in = weight.shape
    a, b = adapter[KEY_A], adapter[KEY_B]
    if a.shape != (spec.rank, d_in) or b.shape != (d_out, spec.rank):
        raise ValueError(
            f"adapter shapes lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} do not fit a rank-{spec.rank} "
            f"adapter on a base weight of shape {(d_out, d_in)}"
        )
    return {"weight": weight + delta_weight(spec, adapter)}
