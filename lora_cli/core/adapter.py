"""LoRA for one linear layer: the adapter module, its init, and the explicit merge.

Conventions (PEFT's, and microsoft/LoRA's):
    base weight W: (d_out, d_in), base(x) = x·Wᵀ
    lora_A: (r, d_in), lora_B: (d_out, r), scaling = alpha / r
    ΔW = scaling · lora_B·lora_A, shape (d_out, d_in)
    out = base(x) + scaling · (x·lora_Aᵀ)·lora_Bᵀ
B starts at zero, so the adapter is exactly the base at step 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LoraSpec:
    """What defines an adapter besides its tensors. New variants add fields here."""

    rank: int
    alpha: float
    init: str = "gaussian"  # lora_A init: "gaussian" N(0,1) as in the blog, "kaiming" as PEFT

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def init_lora_a(spec: LoraSpec, d_in: int, generator: torch.Generator) -> torch.Tensor:
    """lora_A (r, d_in) drawn from `generator` according to `spec.init`."""
    a = torch.empty(spec.rank, d_in)
    if spec.init == "gaussian":
        return a.normal_(0.0, 1.0, generator=generator)
    if spec.init == "kaiming":
        # PEFT's default: kaiming_uniform_(a=sqrt(5)) ⇒ U(-1/sqrt(d_in), 1/sqrt(d_in))
        return nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    raise ValueError(f"unknown lora init {spec.init!r}")


def init_linear_weight(d_in: int, d_out: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh weight (d_out, d_in) drawn as nn.Linear does, but from `generator`."""
    w = torch.empty(d_out, d_in)
    return nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-r update; ΔW is never formed in forward."""

    def __init__(self, base: nn.Linear, spec: LoraSpec, lora_A: torch.Tensor, lora_B: torch.Tensor | None = None):
        super().__init__()
        if lora_A.shape != (spec.rank, base.in_features):
            raise ValueError(f"lora_A must be {(spec.rank, base.in_features)}, got {tuple(lora_A.shape)}")
        self.base = base
        self.base.requires_grad_(False)
        self.spec = spec
        self.scaling = spec.scaling
        self.lora_A = nn.Parameter(lora_A.clone())
        b = torch.zeros(base.out_features, spec.rank) if lora_B is None else lora_B.clone()
        self.lora_B = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, d_in) -> (b, r) -> (b, d_out): O(b·r·(d_in + d_out)), no d_out x d_in product
        return self.base(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The only tensors the optimiser should see."""
        return [self.lora_A, self.lora_B]

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B·A, shape (d_out, d_in)."""
        return delta_weight(self.lora_A, self.lora_B, self.scaling)


def delta_weight(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    return scaling * (lora_B @ lora_A)


def merge_weights(base_weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """W' = W + scaling · B·A as a new tensor; the inputs are not modified.

    Raises:
        ValueError: when the shapes do not fit together.
    """
    d_out, d_in = base_weight.shape
    r = lora_A.shape[0]
    if lora_A.shape != (r, d_in) or lora_B.shape != (d_out, r):
        raise ValueError(
            f"adapter shapes lora_A {tuple(lora_A.shape)}, lora_B {tuple(lora_B.shape)} "
            f"do not fit a base weight of shape {(d_out, d_in)}"
        )
    return base_weight + delta_weight(lora_A, lora_B, scaling)


def linear_from_weight(weight: torch.Tensor) -> nn.Linear:
    """An `nn.Linear(d_in, d_out, bias=False)` holding a copy of `weight` (d_out, d_in)."""
    d_out, d_in = weight.shape
    layer = nn.Linear(d_in, d_out, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer


def lora_parameter_count(d_in: int, d_out: int, rank: int) -> int:
    return rank * (d_in + d_out)
