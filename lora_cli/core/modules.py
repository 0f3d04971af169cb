"""The adapter as a torch module: a frozen nn.Linear plus the trainable low-rank update."""

from __future__ import annotations

import torch
from torch import nn

from lora_cli.core.adapter import AdapterSpec


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-r update; ΔW is never formed in forward."""

    def __init__(self, base: nn.Linear, spec: AdapterSpec, lora_A: torch.Tensor, lora_B: torch.Tensor):
        super().__init__()
        if lora_A.shape != (spec.rank, base.in_features) or lora_B.shape != (base.out_features, spec.rank):
            raise ValueError(
                f"lora_A must be {(spec.rank, base.in_features)} and lora_B {(base.out_features, spec.rank)}, "
                f"got {tuple(lora_A.shape)} and {tuple(lora_B.shape)}"
            )
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = spec.scaling
        self.lora_A = nn.Parameter(lora_A.clone())
        self.lora_B = nn.Parameter(lora_B.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, d_in) -> (b, r) -> (b, d_out): O(b·r·(d_in + d_out)), no d_out x d_in product
        return self.base(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The only tensors the optimiser should see."""
        return [self.lora_A, self.lora_B]


def linear_from_weight(weight: torch.Tensor) -> nn.Linear:
    """An `nn.Linear(d_in, d_out, bias=False)` holding a copy of `weight` (d_out, d_in)."""
    d_out, d_in = weight.shape
    layer = nn.Linear(d_in, d_out, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer
