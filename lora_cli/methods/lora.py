"""LoRA (Hu et al. 2021) on one linear layer, as PEFT does it: W frozen, ΔW = s·B·A trained.

    out = x·Wᵀ + s·(x·lora_Aᵀ)·lora_Bᵀ,  lora_A (r, d_in), lora_B (d_out, r)
Its inits are methods/inits.py, its scaling rules methods/spec.SCALING_RULES, its torch
module methods/modules.LoRALinear. DoRA and LoRA-FA build on this class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lora_cli.methods.method import Method, Params
from lora_cli.methods.spec import KEY_A, KEY_B, AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual


def state_dict(lora_A: torch.Tensor, lora_B: torch.Tensor) -> Params:
    """The factors as PEFT keys them: lora_A (r, d_in), lora_B (d_out, r)."""
    return {KEY_A: lora_A.detach().contiguous(), KEY_B: lora_B.detach().contiguous()}


def low_rank_delta(spec: AdapterSpec, params: Params) -> torch.Tensor:
    """scaling · B·A, shape (d_out, d_in)."""
    return spec.scaling * (params[KEY_B] @ params[KEY_A])


class LoRA(Method):
    name = "lora"
    help = "a rank-r update s·B·A on the frozen W (Hu et al.; PEFT's LoRA)"
    trains = (KEY_A, KEY_B)
    rank_floor = True  # reduced-rank regression (PiSSA's and OLoRA's on their own frozen residual)

    def shapes(self, spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {KEY_A: (spec.rank, d_in), KEY_B: (d_out, spec.rank)}

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        from lora_cli.methods.inits import init_adapter

        lora_a, lora_b, frozen = init_adapter(w, spec, g, data)
        return state_dict(lora_a, lora_b), frozen

    def merged(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        return w + low_rank_delta(spec, params)

    def delta(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        return low_rank_delta(spec, params)

    def module(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.nn.Module:
        from lora_cli.methods.modules import LoRALinear, linear_from_weight

        return LoRALinear(linear_from_weight(w), spec, params)

    def forward(self, w: torch.Tensor, spec: AdapterSpec, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self.module(w, spec, params)(x)

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        return fit.floors([spec.rank])[0]  # reduced-rank regression

    def factors(self, spec: AdapterSpec, params: Params) -> tuple[torch.Tensor, torch.Tensor] | None:
        return spec.scaling * params[KEY_B], params[KEY_A]  # ΔW = (s·B)·A

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        from lora_cli.core.floors import population_floor, whitened

        return population_floor(whitened(target, sigma_half), spec.rank, noise_std)

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> tuple[torch.Tensor, Any] | str:
        from lora_cli.core.penalised import nuclear_optimum

        if bool(low_rank_delta(spec, start).any()):
            return f"the {spec.init} init starts at a non-zero s·B·A, so the decay does not penalise ΔW alone"
        return nuclear_optimum(target, weight_decay / spec.scaling, spec.rank, noise_std)  # (wd/2)(‖A‖² + ‖B‖²) ≥ (wd/s)·‖ΔW‖_*

    def allowed(self, spec: AdapterSpec) -> str:
        return f"rank-{spec.rank} update of the frozen base"

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        return f"{spec.rank} x ({d_in} + {d_out})"

    def delta_title(self, spec: AdapterSpec) -> str:
        return f"learned ΔW = (alpha/{'√r' if spec.scaling_rule == 'rslora' else 'r'})·B·A"

    def words(self, record: Any) -> str:
        """"rank-2 adapter (alpha 4, pissa init, rsLoRA, LoRA+ x16, DoRA)": what differs from plain LoRA."""
        parts = [f"alpha {record.alpha:g}"]
        parts += [f"{record.init} init"] if record.init != "normal" else []
        parts += ["rsLoRA"] if record.scaling_rule == "rslora" else []
        parts += [f"LoRA+ x{record.lr_ratio:g}"] if record.lr_ratio != 1 else []
        parts += [self.label] if self.label else []
        return f"rank-{record.rank} adapter ({', '.join(parts)})"
