"""The LoRA family as a torch module: a frozen nn.Linear plus the trainable low-rank update."""

from __future__ import annotations

import torch
from torch import nn

from lora_cli.methods.dora import row_norms
from lora_cli.methods.method import Params
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M, AdapterSpec


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a rank-r update; plain LoRA never forms ΔW in forward.

    `params` holds lora_A (r, d_in) and lora_B (d_out, r) under PEFT's keys, and for DoRA its
    magnitude m (d_out,). Forward is x·Wᵀ + s·x·Aᵀ·Bᵀ, times m/n per output row for DoRA, with
    n = ‖W + s·B·A‖ per row computed without gradient (DoRA §4.3, as PEFT does).
    """

    def __init__(self, base: nn.Linear, spec: AdapterSpec, params: Params):
        super().__init__()
        lora_a, lora_b = params[KEY_A], params[KEY_B]
        r, d_in, d_out = spec.rank, base.in_features, base.out_features
        if lora_a.shape != (r, d_in) or lora_b.shape != (d_out, r):
            raise ValueError(f"lora_A must be {(r, d_in)} and lora_B {(d_out, r)}, got {tuple(lora_a.shape)} and {tuple(lora_b.shape)}")
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = spec.scaling
        self.lora_A = nn.Parameter(lora_a.clone())
        self.lora_B = nn.Parameter(lora_b.clone())
        self.magnitude = nn.Parameter(params[KEY_M].detach().clone()) if KEY_M in params else None

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

    def named_adapter(self) -> dict[str, nn.Parameter]:
        """The adapter's parameters under PEFT's keys (lora_A, lora_B, and DoRA's m), in that order."""
        named = {KEY_A: self.lora_A, KEY_B: self.lora_B}
        return named | ({KEY_M: self.magnitude} if self.magnitude is not None else {})


class VeRALinear(nn.Module):
    """A frozen `nn.Linear` plus VeRA's update (methods/vera.py): x·Wᵀ + λ_b ⊙ ((λ_d ⊙ (x·Aᵀ))·Bᵀ),
    A and B frozen buffers, λ_b and λ_d trained; as PEFT's VeRA layer computes it."""

    def __init__(self, base: nn.Linear, params: Params):
        from lora_cli.methods.vera import KEY_LB, KEY_LD, KEY_VA, KEY_VB

        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.register_buffer("vera_A", params[KEY_VA].detach().clone())
        self.register_buffer("vera_B", params[KEY_VB].detach().clone())
        self.lambda_b, self.lambda_d = nn.Parameter(params[KEY_LB].detach().clone()), nn.Parameter(params[KEY_LD].detach().clone())
        self.keys = (KEY_VA, KEY_VB, KEY_LB, KEY_LD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lambda_b * ((self.lambda_d * (x @ self.vera_A.T)) @ self.vera_B.T)

    def named_adapter(self) -> dict[str, torch.Tensor]:
        """Every tensor under its key: the frozen projections and the two trained vectors."""
        return dict(zip(self.keys, (self.vera_A, self.vera_B, self.lambda_b, self.lambda_d)))


def linear_from_weight(weight: torch.Tensor) -> nn.Linear:
    """An `nn.Linear(d_in, d_out, bias=False)` holding a copy of `weight` (d_out, d_in)."""
    d_out, d_in = weight.shape
    layer = nn.Linear(d_in, d_out, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer
