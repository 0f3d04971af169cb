"""The reference engine: plain autograd and torch.optim.Adam, as the blog does it.

It trains any module on MSE: the base nn.Linear for pretraining, a LoRALinear (only its
adapter parameters) for finetuning. The fast engine is held to it in tests/test_fast.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lora_cli.core.adapter import AdapterSpec, state_dict
from lora_cli.core.modules import LoRALinear, linear_from_weight


class ReferenceEngine:
    """Adam on `params` of `model` to minimise MSE(model(x), y); x (n, d_in), y (n, d_out)."""

    name = "reference"

    def __init__(self, model: nn.Module, params: list, x: torch.Tensor, y: torch.Tensor, lr: float):
        """`params`: parameters, or torch.optim parameter groups (each with its own lr)."""
        self.model, self.x, self.y = model, x, y
        self.n = x.shape[0]
        self.opt = torch.optim.Adam(params, lr=lr)
        self.params = [p for group in self.opt.param_groups for p in group["params"]]

    def run_steps(self, batches: torch.Tensor) -> float:
        for idx in batches.to(self.x.device):
            loss = F.mse_loss(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return loss.item()

    @torch.inference_mode()
    def evaluate(self) -> float:
        return F.mse_loss(self.model(self.x), self.y).item()

    def state(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for i, p in enumerate(self.params):
            tensors[f"param.{i}"] = p.detach()
            for key in ("step", "exp_avg", "exp_avg_sq"):
                value = self.opt.state[p][key]
                tensors[f"adam.{i}.{key}"] = value.reshape(-1) if key == "step" else value
        return tensors

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(tensors[f"param.{i}"])
                self.opt.state[p] = {
                    "step": tensors[f"adam.{i}.step"].reshape(()).clone(),
                    "exp_avg": tensors[f"adam.{i}.exp_avg"].clone().to(p.device),
                    "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].clone().to(p.device),
                }


class ReferencePretrain(ReferenceEngine):
    """The base nn.Linear, every weight trained."""

    def __init__(self, w0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float, batch_size: int):
        model = linear_from_weight(w0)
        super().__init__(model, [model.weight], x, y, lr)

    def weight(self) -> torch.Tensor:
        return self.model.weight.detach()


class ReferenceFinetune(ReferenceEngine):
    """A LoRALinear on the frozen base; only lora_A and lora_B are trained."""

    def __init__(self, base_w, spec: AdapterSpec, lora_a, lora_b, x: torch.Tensor, y: torch.Tensor, lr: float, batch_size: int):
        model = LoRALinear(linear_from_weight(base_w), spec, lora_a, lora_b)
        a, *others = model.adapter_parameters()  # LoRA+: lora_B and any 1-D parameter (DoRA's m) at lr·ratio
        groups = [{"params": [a]}, {"params": others, "lr": lr * spec.lr_ratio}]
        super().__init__(model, model.adapter_parameters() if spec.lr_ratio == 1 else groups, x, y, lr)

    def adapter(self) -> dict[str, torch.Tensor]:
        """The adapter as trained, as a PEFT-keyed state dict."""
        m = self.model
        return state_dict(m.lora_A, m.lora_B, m.magnitude)
