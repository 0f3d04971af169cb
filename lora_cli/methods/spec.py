"""What defines an adapter besides its tensors: the spec every method reads, the scaling rules,
and PEFT's key names for one adapted linear layer.

Conventions (PEFT's, and microsoft/LoRA's):
    base weight W: (d_out, d_in), base(x) = x·Wᵀ
    lora_A: (r, d_in), lora_B: (d_out, r), scaling from SCALING_RULES (alpha / r)
    ΔW = scaling · lora_B·lora_A, shape (d_out, d_in)
The blog writes the same update as x·A·B with A (d_in, r) and B (r, d_out): blog A = lora_Aᵀ,
blog B = lora_Bᵀ. No torch here: config validation reads these without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

MODULE = "linear"  # the adapted module's name in PEFT keys
KEY_A = f"base_model.model.{MODULE}.lora_A.weight"
KEY_B = f"base_model.model.{MODULE}.lora_B.weight"
KEY_M = f"base_model.model.{MODULE}.lora_magnitude_vector"  # DoRA's m; PEFT saves it without ".weight"
KEY_W = "weight"  # full fine-tuning's one tensor: all of W' (d_out, d_in)


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
    init: str = "normal"  # an entry of methods/inits.INITS
    scaling_rule: str = "standard"  # an entry of SCALING_RULES
    lr_ratio: float = 1.0  # LoRA+: lora_B (and DoRA's m) learn at lr·lr_ratio, lora_A at lr (1: plain LoRA)
    method: str = "lora"  # an entry of methods/registry.METHODS
    gamma: float = 16.0  # the gradient inits' stable scale γ (lora_one, lora_ga)

    @property
    def scaling(self) -> float:
        return SCALING_RULES[self.scaling_rule].fn(self.alpha, self.rank)


def low_rank_size(rank: int, d_in: int, d_out: int) -> int:
    """Numbers in a rank-r factorisation of a d_out x d_in matrix: r·(d_in + d_out)."""
    return rank * (d_in + d_out)
