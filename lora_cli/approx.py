"""The 8x8 demo: fit A·B (rank r) to a random matrix W, beside the provable optimum.

Layout here is the blog's: W (d, k), A (d, r), B (r, k), loss = MSE(A·B, W).
By Eckart–Young–Mirsky the best rank-r approximation in Frobenius norm is the
truncated SVD, so no A·B can have a loss below Σ_{i>r} σᵢ² / (d·k).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lora_cli.config import ApproxConfig
from lora_cli.train import History, LogPoint, check_diverged

# on_log(iteration, loss); called at every logged iteration
LogCallback = Callable[[int, float], None]


@dataclass
class ApproxProblem:
    target: torch.Tensor  # W (d, k)
    a0: torch.Tensor  # (d, r) = randn / sqrt(r)
    b0: torch.Tensor  # (r, k) = 0, so A·B = 0 at the start


@dataclass
class ApproxResult:
    a: torch.Tensor  # (d, r)
    b: torch.Tensor  # (r, k)
    history: History  # logged before the update at iterations 0, log_every, …
    final_loss: float  # after the last update, evaluated in float64


def make_problem(cfg: ApproxConfig) -> ApproxProblem:
    """As the blog: torch.manual_seed(seed); W = randn(d, k); A = randn(d, r) / sqrt(r); B = 0."""
    g = torch.Generator().manual_seed(cfg.seed)  # same stream as torch.manual_seed(seed)
    target = torch.randn(cfg.d_in, cfg.d_out, generator=g)
    a0 = torch.randn(cfg.d_in, cfg.rank, generator=g) / math.sqrt(cfg.rank)
    return ApproxProblem(target, a0, torch.zeros(cfg.rank, cfg.d_out))


def fit(problem: ApproxProblem, cfg: ApproxConfig, on_log: LogCallback | None = None) -> ApproxResult:
    """Adam on MSE(A·B, W), full batch; logs the loss before the step at every log_every-th iteration."""
    a = problem.a0.clone().requires_grad_()
    b = problem.b0.clone().requires_grad_()
    opt = torch.optim.Adam([a, b], lr=cfg.lr)
    history = History()
    for i in range(cfg.iterations):
        loss = F.mse_loss(a @ b, problem.target)
        if i % cfg.log_every == 0:
            value = loss.item()
            if history.points:
                check_diverged(value, i, i, history)
            history.points.append(LogPoint(epoch=i, step=i, loss=value))
            if on_log:
                on_log(i, value)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        # in float64, like the optimum, so float32 rounding can't put it below the bound
        final = F.mse_loss(a.double() @ b.double(), problem.target.double()).item()
    check_diverged(final, cfg.iterations, cfg.iterations, history)
    return ApproxResult(a.detach(), b.detach(), history, final)


def singular_values(target: torch.Tensor) -> torch.Tensor:
    """σ₁ ≥ σ₂ ≥ … of W, in float64 for an exact optimum."""
    return torch.linalg.svdvals(target.double())


def optimal_loss(target: torch.Tensor, rank: int) -> float:
    """min over rank-r M of MSE(M, W) = Σ_{i>r} σᵢ² / (d·k)  (Eckart–Young–Mirsky)."""
    sigma = singular_values(target)
    return (sigma[rank:] ** 2).sum().item() / target.numel()
