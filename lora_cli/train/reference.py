"""The reference engine: plain autograd and torch.optim, as the blog does it (Adam there).

It trains any module on MSE: the base nn.Linear for pretraining and full fine-tuning, the
method's own module (methods/method.Method.module: LoRALinear for the LoRA family, only the
parameters the method trains) for an adapter. The fast engine is held to it in tests/test_fast.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lora_cli.methods.modules import linear_from_weight
from lora_cli.methods.registry import method_of
from lora_cli.methods.spec import KEY_A, KEY_W
from lora_cli.train.loop import evaluated
from lora_cli.train.optimizers import ADAM, Optim, torch_optimizer


class ReferenceEngine:
    """`optim` (torch.optim's own class) on `params` of `model` to minimise MSE(model(x), y); x (n, d_in), y (n, d_out)."""

    name = "reference"

    def __init__(self, model: nn.Module, params: list, x: torch.Tensor, y: torch.Tensor, lr: float, held_out: dict | None = None,
                 optim: Optim = ADAM):
        """`params`: parameters, or torch.optim parameter groups (each with its own lr);
        `held_out`: name -> (x, y) evaluated beside the training data."""
        self.model, self.x, self.y, self.held_out, self.optim = model, x, y, held_out or {}, optim
        self.n = x.shape[0]
        self.opt = torch_optimizer(params, lr, optim)
        self.params = [p for group in self.opt.param_groups for p in group["params"]]
        self.peak = [group["lr"] for group in self.opt.param_groups]  # each group's rate before the schedule
        self.steps = 0  # steps taken: the schedule's clock
        self.prefix = "sgd" if optim.name == "sgd" else "adam"  # checkpoint keys: adam.<i>.exp_avg, ...

    def run_steps(self, batches: torch.Tensor) -> float:
        for idx in batches.to(self.x.device):
            loss = F.mse_loss(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if not self.optim.constant:
                for group, peak in zip(self.opt.param_groups, self.peak):
                    group["lr"] = peak * self.optim.factor(self.steps)
            self.opt.step()
            self.steps += 1
        return loss.item()

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        return {metric: F.mse_loss(self.model(x), y).item() for metric, (x, y) in evaluated(self.x, self.y, self.held_out).items()}

    def state(self) -> dict[str, torch.Tensor]:
        tensors = {"steps": torch.tensor([self.steps])} if not self.optim.constant else {}
        for i, p in enumerate(self.params):
            tensors[f"param.{i}"] = p.detach()
            for key in ("step", *self.optim.state_keys()):
                if key in self.opt.state[p]:  # SGD keeps no step, and its momentum appears at its first step
                    value = self.opt.state[p][key]
                    tensors[f"{self.prefix}.{i}.{key}"] = value.reshape(-1) if key == "step" else value
        return tensors

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(tensors[f"param.{i}"])
                mine = f"{self.prefix}.{i}."
                self.opt.state[p] = {key[len(mine):]: value.reshape(()).clone() if key.endswith(".step") else value.clone().to(p.device)
                                     for key, value in tensors.items() if key.startswith(mine)}
        self.steps = int(tensors["steps"].item()) if "steps" in tensors else 0


class ReferencePretrain(ReferenceEngine):
    """An nn.Linear from task.start["weight"], every weight trained (pretraining, full fine-tuning)."""

    def __init__(self, task):
        model = linear_from_weight(task.start[KEY_W])
        super().__init__(model, [model.weight], task.x, task.y, task.lr, task.held_out, task.optim)

    def trained(self) -> dict[str, torch.Tensor]:
        return {KEY_W: self.model.weight.detach()}


class ReferenceFinetune(ReferenceEngine):
    """The method's module on the frozen base (the LoRA family's LoRALinear); only the tensors
    the task trains get gradients."""

    def __init__(self, task):
        model = method_of(task.spec).module(task.frozen, task.spec, task.start)
        named = model.named_adapter()
        for key, p in named.items():
            p.requires_grad_(key in task.trains)
        trained = [p for key, p in named.items() if key in task.trains]
        lr, ratio = task.lr, task.spec.lr_ratio
        # LoRA+: lora_B and any 1-D parameter (DoRA's m) at lr·ratio, lora_A at lr
        groups = [{"params": [p for key, p in named.items() if key == KEY_A and key in task.trains]},
                  {"params": [p for key, p in named.items() if key != KEY_A and key in task.trains], "lr": lr * ratio}]
        super().__init__(model, trained if ratio == 1 else [g for g in groups if g["params"]], task.x, task.y, lr, task.held_out, task.optim)

    def trained(self) -> dict[str, torch.Tensor]:
        """The adapter as trained, as a PEFT-keyed state dict."""
        return {key: p.detach().contiguous() for key, p in self.model.named_adapter().items()}
