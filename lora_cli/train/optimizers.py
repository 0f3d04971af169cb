"""Optimisers and learning-rate schedules: the registries, and the two ways engines step.

Every engine steps with the update rule of a `torch.optim` class: the reference engine with the
class itself (`torch_optimizer`), the fast and batched engines with the fused kernel that class
dispatches to, called on one flat buffer (`FlatOptimizer`). tests/test_optimizers.py holds both
to `torch.optim` and `torch.optim.lr_scheduler` step for step.

    adam    torch.optim.Adam: betas 0.9/0.999, eps 1e-8; weight_decay adds wd·p to the gradient,
            the gradient of the penalty (wd/2)·‖p‖² (coupled, "L2")
    adamw   torch.optim.AdamW: p ← p·(1 − lr·wd) before Adam's step (decoupled: not the
            gradient of any fixed penalty once Adam rescales the gradient)
    sgd     torch.optim.SGD with momentum μ (dampening 0, not Nesterov); weight decay coupled

A schedule multiplies every learning rate by a factor of the step k (0 for the first step),
W warm-up steps and T steps in all, as torch's schedulers do when stepped once per step:

    constant  1
    warmup    (k + 1)/W while k < W, then 1          (LinearLR(start_factor=1/W, total_iters=W−1))
    cosine    the warm-up, then (1 + cos(π·(k − W)/(T − W)))/2   (CosineAnnealingLR(T_max=T − W))

Importing this module imports no torch (config/ lists the names); the engines' code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    help: str


OPTIMIZERS: dict[str, Entry] = {
    "adam": Entry("Adam (betas 0.9, 0.999); weight_decay is an L2 penalty on the gradient, as torch.optim.Adam"),
    "adamw": Entry("AdamW: weight_decay shrinks every weight by lr·weight_decay each step, apart from Adam's step"),
    "sgd": Entry("SGD with momentum (finetune.momentum); weight_decay is an L2 penalty on the gradient"),
}
SCHEDULES: dict[str, Entry] = {
    "constant": Entry("the learning rate throughout"),
    "warmup": Entry("linear warm-up from lr/W over the first warmup_epochs, then constant"),
    "cosine": Entry("the warm-up (if warmup_epochs > 0), then cosine decay to 0 at the last step"),
}
# the optimisers whose weight decay is the gradient of (wd/2)·‖p‖²: their fixed points minimise the penalised loss
COUPLED_DECAY = ("adam", "sgd")


@dataclass(frozen=True)
class Optim:
    """How an engine steps: the update rule, its weight decay and momentum, and the schedule
    over `total` steps with `warmup` warm-up steps. The default is the blog's: Adam, constant."""

    name: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    warmup: int = 0  # steps
    total: int = 0  # steps in all (cosine's length)

    @property
    def constant(self) -> bool:
        return self.schedule == "constant"

    def factor(self, step: int) -> float:
        """The learning rate's multiplier at step `step` (0 = the first)."""
        if self.constant:
            return 1.0
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "warmup" or self.total <= self.warmup:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup) / (self.total - self.warmup)))

    def state_keys(self) -> tuple[str, ...]:
        """The per-parameter state the update rule keeps (torch.optim's names)."""
        if self.name == "sgd":
            return ("momentum_buffer",) if self.momentum else ()
        return ("exp_avg", "exp_avg_sq")


ADAM = Optim()


def torch_optimizer(params: list, lr: float, optim: Optim) -> Any:
    """The `torch.optim` optimiser of `optim` on `params` (tensors or parameter groups)."""
    import torch

    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=optim.weight_decay)


class FlatOptimizer:
    """`optim`'s update on one flat tensor, by the fused kernel `torch.optim` itself dispatches
    to with fused=True, without the optimizer's per-step Python bookkeeping (140 µs a step, more
    than a whole adapter step). `lrs` gives a tail of the buffer its own learning rate (LoRA+:
    lora_B's), one more kernel call each."""

    def __init__(self, param: Any, grad: Any, lr: float, optim: Optim = ADAM, lrs: list | None = None, betas=(0.9, 0.999), eps=1e-8):
        import torch

        self.param, self.grad, self.optim, self.betas, self.eps = param, grad, optim, betas, eps
        self.slots = {key: torch.zeros_like(param) for key in optim.state_keys()}
        self.step_count = torch.zeros((), dtype=torch.float32, device=param.device)  # torch.optim's "step"
        self.steps = 0  # the same count as a Python int: the schedule's and SGD's first step
        # one kernel call per (start, lr) segment, its argument lists made once: views and lists cost as much as small ops
        starts = [(0, lr), *(lrs or [])]
        ends = [start for start, _ in starts[1:]] + [param.numel()]
        buffers = (param, grad, *self.slots.values())
        if len(starts) > 1:  # segments of a flat buffer; one segment is the whole tensor, whatever its shape
            segments = [([t[start:end] for t in buffers], rate) for (start, rate), end in zip(starts, ends)]
        else:
            segments = [(buffers, lr)]
        self.plain = optim.constant and optim.name != "sgd"
        if optim.name == "sgd":
            self.kernel = torch._fused_sgd_
            self.kwargs = {"weight_decay": optim.weight_decay, "momentum": optim.momentum, "dampening": 0.0, "nesterov": False, "maximize": False}
            self.calls = [(([p], [g], list(slots)), rate) for (p, g, *slots), rate in segments]
        else:
            self.kernel = torch._fused_adamw_ if optim.name == "adamw" else torch._fused_adam_
            self.kwargs = {"beta1": betas[0], "beta2": betas[1], "weight_decay": optim.weight_decay, "eps": eps, "amsgrad": False, "maximize": False}
            self.calls = [(([p], [g], [m], [v], [], [self.step_count]), rate) for (p, g, m, v), rate in segments]

    def state(self, name: str) -> dict[str, Any]:
        """The parameter (as `name`) and the optimiser state, for a checkpoint."""
        return {name: self.param, **self.slots, "step": self.step_count.reshape(1)}

    def load(self, name: str, tensors: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            self.param.copy_(tensors[name])
            for key, slot in self.slots.items():
                slot.copy_(tensors[key])
            self.step_count.copy_(tensors["step"].reshape(()))
        self.steps = int(tensors["step"].reshape(()).item())

    def zero_(self, views: Any) -> None:
        """Zero the parameter and its state where `views(tensor)` points (a stopped lane)."""
        for tensor in (self.param, *self.slots.values()):
            for part in views(tensor):
                part.zero_()

    def step(self) -> None:
        self.step_count.add_(1)
        if self.plain:  # Adam or AdamW at a constant rate: nothing changes between steps
            self.steps += 1
            for args, lr in self.calls:
                self.kernel(*args, lr=lr, **self.kwargs)
            return
        factor, kwargs = self.optim.factor(self.steps), self.kwargs
        self.steps += 1
        if self.optim.name == "sgd":
            kwargs = {**kwargs, "is_first_step": self.steps == 1}  # torch.optim.SGD starts the momentum at the gradient
        for args, lr in self.calls:
            self.kernel(*args, lr=lr * factor, **kwargs)
