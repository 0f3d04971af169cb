"""Synthetic regression data y = X·θ (+ noise): tensors from generators, nothing else.

Layout is the blog's: θ (d_in, d_out), X (n, d_in), y = X·θ (n, d_out).
"""

from __future__ import annotations

import torch


def make_theta(d_in: int, d_out: int, g: torch.Generator) -> torch.Tensor:
    """θ ~ N(0, 1), shape (d_in, d_out)."""
    return torch.randn(d_in, d_out, generator=g)


def make_regression(
    n: int, theta: torch.Tensor, g_x: torch.Generator, g_noise: torch.Generator, noise_std: float = 0.0,
    factor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """X of shape (n, d_in), N(0, 1) or, given `factor` L (d_in, d_in), Z·L ~ N(0, LᵀL), and
    y = X·θ + noise_std·N(0, 1) of shape (n, d_out).

    `g_noise` is drawn from only when noise_std > 0, so noiseless data never touches it.
    """
    x = torch.randn(n, theta.shape[0], generator=g_x)
    if factor is not None:
        x = x @ factor
    y = x @ theta
    if noise_std > 0:
        y.add_(torch.randn(y.shape, generator=g_noise), alpha=noise_std)
    return x, y


def init_linear_weight(d_in: int, d_out: int, g: torch.Generator) -> torch.Tensor:
    """A fresh weight (d_out, d_in) drawn as nn.Linear does, but from `g`: the base before pretraining."""
    import math

    return torch.nn.init.kaiming_uniform_(torch.empty(d_out, d_in), a=math.sqrt(5), generator=g)
