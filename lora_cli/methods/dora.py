"""DoRA (Liu et al. 2024; PEFT's use_dora): LoRA plus a trained magnitude m (d_out,) per output row.

    W' = (m / n)[:, None] ⊙ (W + s·B·A),  n = ‖W + s·B·A‖ per row (dim=1), detached in training
m starts at PEFT's ‖W + s·B₀·A₀‖ per row, so the adapter is a no-op at step 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lora_cli.methods.lora import LoRA, low_rank_delta
from lora_cli.methods.method import Method, Params
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M, AdapterSpec

if TYPE_CHECKING:
    import torch


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """‖weight[i, :]‖ for each output row i: DoRA's n, and its m at step 0."""
    import torch

    return torch.linalg.norm(weight, dim=1)


def start_magnitude(w: torch.Tensor, spec: AdapterSpec, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """m₀ = ‖W + s·B₀·A₀‖ per row (d_out,)."""
    import torch

    return row_norms(torch.addmm(w, lora_b, lora_a, alpha=spec.scaling))


class DoRA(LoRA):
    name = "dora"
    help = "LoRA plus a trained magnitude per output row (Liu et al.; PEFT's use_dora)"
    label = "DoRA"
    trains = (KEY_A, KEY_B, KEY_M)
    caveat = "DoRA's magnitude also rescales the base's rows, so it can end below the rank-r optimum"
    rank_floor = False  # the rank-r floor bounds it only loosely (see caveat)
    delta_title = Method.delta_title
    factors = Method.factors  # m/‖W + s·B·A‖ rescales every row: ΔW is dense

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> str:
        return "DoRA's magnitude vector is decayed too, so the penalty is no function of ΔW alone: no closed form here"

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        return f"{super().terms(spec, d_in, d_out)} + {d_out} magnitudes"

    def shapes(self, spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {**super().shapes(spec, d_in, d_out), KEY_M: (d_out,)}

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        params, frozen = super().start(w, spec, g, data)
        return {**params, KEY_M: start_magnitude(frozen, spec, params[KEY_A], params[KEY_B])}, frozen

    def merged(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        updated = w + low_rank_delta(spec, params)
        return (params[KEY_M] / row_norms(updated))[:, None] * updated

    def delta(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        return self.merged(w, spec, params) - w
