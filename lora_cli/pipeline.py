"""The blog's three stages as pure functions of (config, tensors): no files, no printing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lora_cli import data
from lora_cli.adapter import (
    LoRALinear,
    LoraSpec,
    init_linear_weight,
    init_lora_a,
    linear_from_weight,
    merge_weights,
)
from lora_cli.config import Config
from lora_cli.train import EpochCallback, History, fit


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


def pretrain(cfg: Config, on_epoch: EpochCallback | None = None) -> PretrainResult:
    """Fit nn.Linear(d_in, d_out, bias=False) to y = X·θ from its default init."""
    x, y = data.pretrain_data(cfg)
    d = cfg.data
    model = linear_from_weight(init_linear_weight(d.d_in, d.d_out, data.generator(cfg.seed, "init_base")))
    history = fit(model, [model.weight], x, y, cfg.pretrain, data.generator(cfg.seed, "batches_pretrain"), on_epoch)
    return PretrainResult(model.weight.detach(), history)


def finetune(cfg: Config, base_weight: torch.Tensor, on_epoch: EpochCallback | None = None) -> FinetuneResult:
    """Fit a rank-r adapter on the frozen base to the shifted data y2 = X2·θ2."""
    x, y = data.finetune_data(cfg)
    spec = lora_spec(cfg)
    lora_a = init_lora_a(spec, cfg.data.d_in, data.generator(cfg.seed, "init_adapter"))
    model = LoRALinear(linear_from_weight(base_weight), spec, lora_a)
    history = fit(
        model, model.adapter_parameters(), x, y, cfg.finetune, data.generator(cfg.seed, "batches_finetune"), on_epoch
    )
    return FinetuneResult(model.lora_A.detach(), model.lora_B.detach(), history)


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
