"""LoRA-FA (Zhang et al. 2023; PEFT's create_lorafa_optimizer): lora_A frozen at its init, only lora_B trained.

ΔW = s·B·A₀ keeps its rows in the span of A₀'s, so the best it can do is least squares of
the frozen base's residual R on the projected inputs U = X·A₀ᵀ (n, r): a closed form, with
no rank cut (B is unconstrained once A₀ is fixed). It exports as a plain PEFT LoRA adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_cli.methods.lora import LoRA
from lora_cli.methods.method import Params
from lora_cli.methods.spec import KEY_A, KEY_B, AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual


class LoRAFA(LoRA):
    name = "lora_fa"
    help = "LoRA with lora_A frozen at its init, only lora_B trained (LoRA-FA; PEFT's create_lorafa_optimizer)"
    label = "LoRA-FA"
    trains = (KEY_B,)
    rank_floor = False  # its floor is least squares in A₀'s rows, per trial

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> str:
        return "LoRA-FA decays lora_B alone, lora_A fixed at its init: no closed form here"

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        return f"{d_out} x {spec.rank}"

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        return fit.floors([None], rows=start[KEY_A])[0]  # min over B of ‖R − s·(X·A₀ᵀ)·Bᵀ‖²: least squares on X·A₀ᵀ

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        from lora_cli.core.floors import population_floor_in_rows, whitened

        return population_floor_in_rows(whitened(target, sigma_half), whitened(start[KEY_A], sigma_half), noise_std)

    def allowed(self, spec: AdapterSpec) -> str:
        return f"s·B·A₀ with lora_A frozen, rank {spec.rank}"
