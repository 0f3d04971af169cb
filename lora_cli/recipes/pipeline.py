"""The blog's three stages as pure functions of (config, tensors): no files, no printing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lora_cli.core import data
from lora_cli.train import fast
from lora_cli.core.adapter import (
    LoRALinear,
    LoraSpec,
    init_linear_weight,
    init_lora_a,
    linear_from_weight,
    merge_weights,
)
from lora_cli.config.loading import Config
from lora_cli.errors import ConfigError
from lora_cli.train.loop import CheckpointCallback, EpochCallback, History, TrainState, fit

ENGINES = ("fast", "reference")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when a GPU is usable, else cpu; cuda without one is an error."""
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r}: must be one of {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ConfigError(f"--device cuda: no usable CUDA GPU here (torch {torch.__version__}); use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")


def lora_spec(cfg: Config) -> LoraSpec:
    ft = cfg.finetune
    return LoraSpec(rank=ft.rank, alpha=ft.alpha, init=ft.init)


@dataclass
class PretrainResult:
    weight: torch.Tensor  # (d_out, d_in)
    history: History


@dataclass
class FinetuneResult:
    lora_A: torch.Tensor  # (r, d_in)
    lora_B: torch.Tensor  # (d_out, r)
    history: History


@dataclass
class MergeResult:
    merged: torch.Tensor  # (d_out, d_in)
    delta: torch.Tensor  # ΔW = scaling·B·A, (d_out, d_in)
    base_loss: float  # MSE of the frozen base on the shifted data
    adapter_loss: float  # MSE of base + adapter
    merged_loss: float  # MSE of the merged weight
    max_abs_diff: float  # max |merged(x) − adapter(x)| over the shifted data


def pretrain(
    cfg: Config,
    on_epoch: EpochCallback | None = None,
    engine: str = "fast",
    device: str = "cpu",
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> PretrainResult:
    """Fit nn.Linear(d_in, d_out, bias=False) to y = X·θ from its default init.

    Data and init are drawn on the CPU (so every device sees the same numbers), then moved.
    `resume` continues from a checkpoint of the same engine; `on_checkpoint` receives them.
    """
    dev = resolve_device(device)
    x, y = (t.to(dev) for t in data.pretrain_data(cfg))
    d = cfg.data
    w0 = init_linear_weight(d.d_in, d.d_out, data.generator(cfg.seed, "init_base")).to(dev)
    batches = data.generator(cfg.seed, "batches_pretrain")
    if engine == "fast":
        weight, history = fast.pretrain(w0, x, y, cfg.pretrain, batches, on_epoch, resume, on_checkpoint)
    else:
        model = linear_from_weight(w0)
        history = fit(model, [model.weight], x, y, cfg.pretrain, batches, on_epoch, resume, on_checkpoint)
        weight = model.weight.detach()
    return PretrainResult(weight.cpu(), history)


def finetune(
    cfg: Config,
    base_weight: torch.Tensor,
    on_epoch: EpochCallback | None = None,
    engine: str = "fast",
    device: str = "cpu",
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> FinetuneResult:
    """Fit a rank-r adapter on the frozen base to the shifted data y2 = X2·θ2 (see `pretrain`)."""
    dev = resolve_device(device)
    x, y = (t.to(dev) for t in data.finetune_data(cfg))
    spec = lora_spec(cfg)
    lora_a = init_lora_a(spec, cfg.data.d_in, data.generator(cfg.seed, "init_adapter")).to(dev)
    base_weight = base_weight.to(dev)
    batches = data.generator(cfg.seed, "batches_finetune")
    if engine == "fast":
        lora_b = torch.zeros(cfg.data.d_out, spec.rank, device=dev)
        a, b, history = fast.finetune(
            base_weight, lora_a, lora_b, spec.scaling, x, y, cfg.finetune, batches, on_epoch, resume, on_checkpoint
        )
    else:
        model = LoRALinear(linear_from_weight(base_weight), spec, lora_a)
        params = model.adapter_parameters()
        history = fit(model, params, x, y, cfg.finetune, batches, on_epoch, resume, on_checkpoint)
        a, b = model.lora_A.detach(), model.lora_B.detach()
    return FinetuneResult(a.cpu(), b.cpu(), history)


@torch.inference_mode()
def merge(cfg: Config, base_weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor) -> MergeResult:
    """W' = W + scaling·B·A, checked against the unmerged adapter on the shifted data."""
    x, y = data.finetune_data(cfg)
    spec = lora_spec(cfg)
    merged = merge_weights(base_weight, lora_A, lora_B, spec.scaling)
    adapter = LoRALinear(linear_from_weight(base_weight), spec, lora_A, lora_B)
    adapter_out = adapter(x)
    merged_out = x @ merged.T
    return MergeResult(
        merged=merged,
        delta=adapter.delta_weight(),
        base_loss=F.mse_loss(x @ base_weight.T, y).item(),
        adapter_loss=F.mse_loss(adapter_out, y).item(),
        merged_loss=F.mse_loss(merged_out, y).item(),
        max_abs_diff=(merged_out - adapter_out).abs().max().item(),
    )
