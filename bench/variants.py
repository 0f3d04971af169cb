"""Training variants the benchmark compares, each on the same data, init and batches.

naive      the blog's code ported literally: nn.Linear + autograd + Adam for pretraining;
           for finetuning its lora_nn_linear, which forms A·B (d_in x d_out) every step.
reference  lora's autograd engine (train.fit with LoRALinear).
fast       lora's fast engine (lora_cli.train.fast).
peft       Hugging Face PEFT's LoRA layer on the same frozen nn.Linear (if peft is installed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lora_cli.core import data
from lora_cli.train import fast
from lora_cli.core.adapter import LoRALinear, init_linear_weight, init_lora_a, linear_from_weight
from lora_cli.config.loading import Config, TrainConfig
from lora_cli.recipes.pipeline import lora_spec
from lora_cli.train.loop import EpochCallback, epoch_batches, fit

# A runner trains cfg.epochs epochs, calling on_epoch(epoch, _) after each (0 = start) so the
# driver can time epochs that contain no full-data evaluation; it returns the final full-data MSE.
Runner = Callable[[EpochCallback], float]


def _loop(params, step: Callable[[torch.Tensor], torch.Tensor], n: int, cfg: TrainConfig, gen, on_epoch) -> None:
    """The blog's train(): Adam with torch defaults, n // b steps an epoch."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    on_epoch(0, None)
    for epoch in range(1, cfg.epochs + 1):
        for idx in epoch_batches(n, cfg.batch_size, n // cfg.batch_size, gen):
            loss = step(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        on_epoch(epoch, None)


def _quiet(cfg: TrainConfig) -> TrainConfig:
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, log_every=cfg.epochs)


def pretrain_runners(cfg: Config) -> tuple[dict[str, Callable[[], Runner]], float]:
    """Factories (setup excluded from timing) for each pretraining variant; and setup seconds."""
    start = time.perf_counter()
    x, y = data.pretrain_data(cfg)
    w0 = init_linear_weight(cfg.data.d_in, cfg.data.d_out, data.generator(cfg.seed, "init_base"))
    setup = time.perf_counter() - start
    gen = lambda: data.generator(cfg.seed, "batches_pretrain")  # noqa: E731 - same batches each
    tc = cfg.pretrain

    def naive() -> Runner:
        model = linear_from_weight(w0)
        g = gen()

        def run(on_epoch) -> float:
            _loop(model.parameters(), lambda idx: F.mse_loss(model(x[idx]), y[idx]), len(x), tc, g, on_epoch)
            with torch.no_grad():
                return F.mse_loss(model(x), y).item()

        return run

    def reference() -> Runner:
        model = linear_from_weight(w0)
        return lambda on_epoch: fit(model, [model.weight], x, y, _quiet(tc), gen(), on_epoch).final

    def fast_engine() -> Runner:
        return lambda on_epoch: fast.pretrain(w0, x, y, _quiet(tc), gen(), on_epoch)[1].final

    return {"naive": naive, "reference": reference, "fast": fast_engine}, setup


class BlogLoraLinear(nn.Module):
    """The blog's lora_nn_linear: A (d_in, r), B (r, d_out), ΔW = A·B formed in forward."""

    def __init__(self, linear: nn.Linear, a: torch.Tensor, scaling: float):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.A = nn.Parameter(a.clone())
        self.B = nn.Parameter(torch.zeros(a.shape[1], linear.out_features))
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + torch.matmul(x, torch.matmul(self.A, self.B) * self.scaling)


def finetune_runners(cfg: Config, base_w: torch.Tensor) -> tuple[dict[str, Callable[[], Runner]], float]:
    start = time.perf_counter()
    x, y = data.finetune_data(cfg)
    spec = lora_spec(cfg)
    a0 = init_lora_a(spec, cfg.data.d_in, data.generator(cfg.seed, "init_adapter"))
    setup = time.perf_counter() - start
    gen = lambda: data.generator(cfg.seed, "batches_finetune")  # noqa: E731
    tc = cfg.finetune

    def trained(model: nn.Module, params) -> Runner:
        g = gen()

        def run(on_epoch) -> float:
            _loop(params, lambda idx: F.mse_loss(model(x[idx]), y[idx]), len(x), tc, g, on_epoch)
            with torch.no_grad():
                return F.mse_loss(model(x), y).item()

        return run

    def naive() -> Runner:
        model = BlogLoraLinear(linear_from_weight(base_w), a0.T, spec.scaling)  # blog A = lora_Aᵀ
        return trained(model, [model.A, model.B])

    def reference() -> Runner:
        model = LoRALinear(linear_from_weight(base_w), spec, a0)
        return lambda on_epoch: fit(model, model.adapter_parameters(), x, y, _quiet(tc), gen(), on_epoch).final

    def fast_engine() -> Runner:
        b0 = torch.zeros(cfg.data.d_out, spec.rank)
        return lambda on_epoch: fast.finetune(base_w, a0, b0, spec.scaling, x, y, _quiet(tc), gen(), on_epoch)[2].final

    def peft() -> Runner:
        from peft import LoraConfig, get_peft_model

        holder = nn.Module()
        holder.linear = linear_from_weight(base_w)
        config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=["linear"], lora_dropout=0.0)
        model = get_peft_model(holder, config)
        layer = model.base_model.model.linear
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(a0)
            layer.lora_B["default"].weight.zero_()
        return trained(layer, [p for p in model.parameters() if p.requires_grad])

    runners = {"naive": naive, "reference": reference, "fast": fast_engine}
    try:
        import peft as _  # noqa: F401

        runners["peft"] = peft
    except ImportError:
        pass
    return runners, setup
