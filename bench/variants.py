"""Training variants the benchmark compares, each on the same data, init and batches.

naive      the blog's code ported literally: nn.Linear + autograd + Adam for pretraining;
           for finetuning its lora_nn_linear, which forms A·B (d_in x d_out) every step.
reference  lora's autograd engine (train/reference.py, LoRALinear) in lora's training loop.
fast       lora's fast engine (train/fast.py) in lora's training loop.
peft       Hugging Face PEFT's LoRA layer on the same frozen nn.Linear (if peft is installed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lora_cli.config.schemas import Config, TrainConfig
from lora_cli.core.data import init_linear_weight
from lora_cli.methods.inits import init_adapter
from lora_cli.methods.modules import linear_from_weight
from lora_cli.core.rng import generator
from lora_cli.recipes.data import regression, thetas
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_W
from lora_cli.train.engines import Task, build
from lora_cli.train.loop import EpochCallback, Schedule, train
from lora_cli.train.sampler import epoch_batches

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


def _quiet(cfg: TrainConfig) -> Schedule:
    """No full-data evaluation but the last, so epochs time training alone."""
    return Schedule(cfg.epochs, cfg.batch_size, log_every=cfg.epochs)


def _engine_runner(engine, cfg: TrainConfig, gen) -> Runner:
    return lambda on_epoch: train(engine, _quiet(cfg), gen(), on_epoch).history.final


def pretrain_runners(cfg: Config) -> tuple[dict[str, Callable[[], Runner]], float]:
    """Factories (setup excluded from timing) for each pretraining variant; and setup seconds."""
    start = time.perf_counter()
    x, y = regression(cfg, thetas(cfg)[0], "pretrain")
    w0 = init_linear_weight(cfg.data.d_in, cfg.data.d_out, generator(cfg.seed, "init_base"))
    setup = time.perf_counter() - start
    gen = lambda: generator(cfg.seed, "batches_pretrain")  # noqa: E731 - same batches each
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
        return _engine_runner(build("reference", "full", Task((KEY_W,), w0, None, {KEY_W: w0}, x, y, tc.lr, tc.batch_size)), tc, gen)

    def fast_engine() -> Runner:
        return _engine_runner(build("fast", "full", Task((KEY_W,), w0, None, {KEY_W: w0}, x, y, tc.lr, tc.batch_size)), tc, gen)

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
    x, y = regression(cfg, thetas(cfg)[1], "finetune")
    spec = cfg.adapter.spec()
    a0, b0, _ = init_adapter(base_w, spec, generator(cfg.seed, "init_adapter"))
    setup = time.perf_counter() - start
    gen = lambda: generator(cfg.seed, "batches_finetune")  # noqa: E731
    tc = cfg.finetune

    def trained(model: nn.Module, params) -> Runner:
        g = gen()

        def run(on_epoch) -> float:
            _loop(params, lambda idx: F.mse_loss(model(x[idx]), y[idx]), len(x), tc, g, on_epoch)
            with torch.no_grad():
                return F.mse_loss(model(x), y).item()

        return run

    def lora_task() -> Task:
        return Task((KEY_A, KEY_B), base_w, spec, {KEY_A: a0, KEY_B: b0}, x, y, tc.lr, tc.batch_size)

    def naive() -> Runner:
        model = BlogLoraLinear(linear_from_weight(base_w), a0.T, spec.scaling)  # blog A = lora_Aᵀ
        return trained(model, [model.A, model.B])

    def reference() -> Runner:
        return _engine_runner(build("reference", "lora", lora_task()), tc, gen)

    def fast_engine() -> Runner:
        return _engine_runner(build("fast", "lora", lora_task()), tc, gen)

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
