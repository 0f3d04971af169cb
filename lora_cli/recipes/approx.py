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

from lora_cli.config.schemas import ApproxConfig
from lora_cli.train.loop import Divergence, History, LogPoint, diverged_at

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
    divergence: Divergence | None = None


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
    step = _adam([a, b], cfg.lr)
    history = History()
    for i in range(cfg.iterations):
        loss = F.mse_loss(a @ b, problem.target)
        if i % cfg.log_every == 0:
            value = loss.item()
            if history.points and (divergence := diverged_at(value, history, i, i)):
                return ApproxResult(a.detach(), b.detach(), history, value, divergence)
            history.points.append(LogPoint(epoch=i, step=i, loss=value))
            if on_log:
                on_log(i, value)
        a.grad = b.grad = None
        loss.backward()
        step()
    with torch.no_grad():
        # in float64, like the optimum, so float32 rounding can't put it below the bound
        final = F.mse_loss(a.double() @ b.double(), problem.target.double()).item()
    divergence = diverged_at(final, history, cfg.iterations, cfg.iterations)
    return ApproxResult(a.detach(), b.detach(), history, final, divergence)


def _adam(params: list[torch.Tensor], lr: float) -> Callable[[], None]:
    """torch.optim.Adam's update (defaults, single-tensor path: bit-identical to the class).

    The functional form, because the class's first add_param_group imports torch._dynamo:
    about 0.8 s of a 3 s `lora approx` for a 32-parameter problem.
    """
    from torch.optim.adam import adam

    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    steps = [torch.tensor(0.0) for _ in params]

    @torch.no_grad()
    def step() -> None:
        adam(params, [p.grad for p in params], exp_avg, exp_avg_sq, [], steps, foreach=False, capturable=False,
             differentiable=False, fused=None, grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
             beta1=0.9, beta2=0.999, lr=lr, weight_decay=0.0, eps=1e-8, maximize=False)

    return step
