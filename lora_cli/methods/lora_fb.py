"""Frozen B (Zhu et al. 2024, "Asymmetry in Low-Rank Adapters of Foundation Models"): lora_B
frozen at a random start, only lora_A trained; the mirror of LoRA-FA.

With B₀ = 0 nothing could be learned, so the roles of the init swap: lora_B starts as the
init's random draw (as lora_A would be drawn, on the output side) and lora_A at 0, so that
ΔW = 0 at step 0. ΔW = s·B₀·A keeps its columns in the span of B₀'s, so the best it can do is
least squares of R·Q on X, Q an orthonormal basis of B₀'s columns: a closed form, with no
rank cut. It exports as a plain PEFT LoRA adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lora_cli.methods.lora import LoRA, state_dict
from lora_cli.methods.method import Params
from lora_cli.methods.spec import KEY_A, KEY_B, AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual


class LoRAFB(LoRA):
    name = "lora_fb"
    help = "LoRA with lora_B frozen at a random start and lora_A from 0, only lora_A trained (Zhu et al.'s asymmetry)"
    label = "frozen-B LoRA"
    trains = (KEY_A,)
    rank_floor = False  # its floor is least squares in B₀'s columns, per trial

    def init_problem(self, spec: AdapterSpec) -> str | None:
        from lora_cli.methods.inits import INITS

        if INITS[spec.init].changes_base or INITS[spec.init].reads or spec.init == "orthogonal":
            return f"is not allowed with {self.name}, which freezes a random lora_B; use normal, kaiming or gaussian"
        return None

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        import torch

        from lora_cli.methods.inits import init_adapter

        drawn, _, _ = init_adapter(w.T, spec, g)  # (r, d_out): the init's random factor, on the output side
        return state_dict(torch.zeros(spec.rank, w.shape[1]), drawn.T.contiguous()), w

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> str:
        return "frozen B decays lora_A alone, lora_B fixed at its start: no closed form here"

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        return f"{spec.rank} x {d_in}"

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        return fit.floor_in_columns(start[KEY_B])  # min over A of ‖R − s·X·Aᵀ·B₀ᵀ‖²: least squares of R·Q on X

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        from lora_cli.core.floors import population_floor_in_columns, whitened

        return population_floor_in_columns(whitened(target, sigma_half), start[KEY_B], noise_std)

    def allowed(self, spec: AdapterSpec) -> str:
        return f"s·B₀·A with lora_B frozen, rank {spec.rank}"
