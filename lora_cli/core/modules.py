"""The adapter as a torch module: a frozen nn.Linear plus the trainable low-rank update."""

from __future__ import annotations

import torch
from torch import nn

from lora_cli.core.adapter import KEY_A, KEY_B, AdapterSpec, expected_shapes, row_norms


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-r update; plain LoRA never forms ΔW in forward.

    With spec.dora, also DoRA's magnitude m (d_out,): `magnitude` when given (a trained
    adapter), else PEFT's start ‖W + s·B₀·A₀‖ per row. Forward is (m/n)⊙(x·Wᵀ + s·x·Aᵀ·Bᵀ)
    with n = ‖W + s·B·A‖ per row computed without gradient (DoRA §4.3, as PEFT does).
    """

    def __init__(self, base: nn.Linear, spec: AdapterSpec, lora_A: torch.Tensor, lora_B: torch.Tensor, magnitude: torch.Tensor | None = None):
        super().__init__()
        shapes = expected_shapes(spec, base.in_features, base.out_features)
        if lora_A.shape != shapes[KEY_A] or lora_B.shape != shapes[KEY_B]:
            raise ValueError(
                f"lora_A must be {shapes[KEY_A]} and lora_B {shapes[KEY_B]}, got {tuple(lora_A.shape)} and {tuple(lora_B.shape)}"
            )
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = spec.scaling
        self.lora_A = nn.Parameter(lora_A.clone())
        self.lora_B = nn.Parameter(lora_B.clone())
        self.magnitude = None
        if spec.dora:
            start = magnitude if magnitude is not None else self._row_norms()
            self.magnitude = nn.Parameter(start.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, d_in) -> (b, r) -> (b, d_out): O(b·r·(d_in + d_out)), no d_out x d_in product
        out = self.base(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
        if self.magnitude is None:
            return out
        return out * (self.magnitude / self._row_norms())

    @torch.no_grad()
    def _row_norms(self) -> torch.Tensor:
        """n = ‖W + s·B·A‖ per row, detached."""
        return row_norms(torch.addmm(self.base.weight, self.lora_B, self.lora_A, alpha=self.scaling))

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The only tensors the optimiser should see: lora_A, lora_B, and DoRA's m."""
        return [self.lora_A, self.lora_B] + ([self.magnitude] if self.magnitude is not None else [])


def linear_from_weight(weight: torch.Tensor) -> nn.Linear:
    """An `nn.Linear(d_in, d_out, bias=False)` holding a copy of `weight` (d_out, d_in)."""
    d_out, d_in = weight.shape
    layer = nn.Linear(d_in, d_out, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer
