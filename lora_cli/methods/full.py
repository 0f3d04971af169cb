"""Full fine-tuning: every weight of W trained on the shifted task from the pretrained base.

The baseline every adapter is measured against: its optimum is least squares over all W on the
finetune data, and on fresh data the noise floor σ² (W' = θ2ᵀ is reachable). Its one tensor is
W' itself; it is no low-rank adapter, so it has no PEFT export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lora_cli.methods.method import Method, Params
from lora_cli.methods.spec import KEY_W, AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual


class Full(Method):
    name = "full"
    help = "full fine-tuning: every weight of W trained (the baseline; adapter.rank only sizes the diagnostics)"
    label = "full fine-tuning"
    trains = (KEY_W,)
    full_rank = True
    no_peft = "full fine-tuning changes every weight of W, so there is no low-rank adapter to export; merged.safetensors holds W'"

    def shapes(self, spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {KEY_W: (d_out, d_in)}

    def step_flops(self, spec: AdapterSpec, batch: int, d_in: int, d_out: int) -> float:
        return 4.0 * batch * d_in * d_out  # the forward and weight-gradient GEMMs, as pretraining

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        return {KEY_W: w.clone()}, w

    def merged(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        return params[KEY_W].clone()

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        return fit.floors([None])[0]  # least squares over every W' = W + ΔW

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        return noise_std**2  # W' = θ2ᵀ leaves only the noise

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> tuple[torch.Tensor, Any] | str:
        from lora_cli.core.penalised import ridge_optimum

        return ridge_optimum(target, frozen, weight_decay, noise_std)  # the decay pulls all of W' = W + ΔW to 0

    def allowed(self, spec: AdapterSpec) -> str:
        return "full-rank update of W"

    def words(self, record: Any) -> str:
        return "full fine-tuning (every weight of W)"

    def sized(self, spec: AdapterSpec) -> str:
        return "full fine-tuned weight"
