"""Synthetic regression data y = X·θ, regenerated bit-identically from the seed.

Every random draw has its own `torch.Generator`, seeded from (seed, purpose), so
a stage can regenerate exactly the tensors it needs (finetune needs θ and X2,
never X) and adding a new draw never shifts an existing one.
"""

from __future__ import annotations

import hashlib

import torch

from lora_cli.config.loading import Config

PURPOSES = (
    "theta",
    "x_pretrain",
    "noise_pretrain",
    "x_finetune",
    "noise_finetune",
    "init_base",
    "init_adapter",
    "batches_pretrain",
    "batches_finetune",
)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose, seeded stably from (seed, purpose)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random purpose {purpose!r}")
    digest = hashlib.sha256(f"lora/{seed}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def make_theta(cfg: Config) -> torch.Tensor:
    """θ ~ N(0, 1), shape (d_in, d_out): the blog's layout, y = X·θ."""
    return torch.randn(cfg.data.d_in, cfg.data.d_out, generator=generator(cfg.seed, "theta"))


def shift_theta(cfg: Config, theta: torch.Tensor) -> torch.Tensor:
    """θ2 for the finetune data; kind 'add' is θ + value (a rank-1 change)."""
    if cfg.shift.kind == "add":
        return theta + cfg.shift.value
    raise ValueError(f"unknown shift kind {cfg.shift.kind!r}")


def make_regression(cfg: Config, theta: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw X ~ N(0, 1) of shape (n, d_in) and y = X·θ (+ noise) of shape (n, d_out).

    Args:
        split: "pretrain" or "finetune"; each has its own X and noise streams.
    """
    n, d_in = cfg.data.n, cfg.data.d_in
    x = torch.randn(n, d_in, generator=generator(cfg.seed, f"x_{split}"))
    y = x @ theta
    if cfg.data.noise_std > 0:
        noise = torch.randn(y.shape, generator=generator(cfg.seed, f"noise_{split}"))
        y.add_(noise, alpha=cfg.data.noise_std)
    return x, y


def pretrain_data(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    return make_regression(cfg, make_theta(cfg), "pretrain")


def finetune_data(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    return make_regression(cfg, shift_theta(cfg, make_theta(cfg)), "finetune")
