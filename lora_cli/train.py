"""The reference training engine: plain autograd and Adam, as the blog does it.

Each epoch has n // batch_size steps; each step draws batch_size distinct random
rows. The full-data MSE is logged before training (epoch 0, the baseline), every
`log_every` epochs and at the last epoch. Nothing here prints: progress goes to
an optional callback, and the history is returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from lora_cli.config import TrainConfig
from lora_cli.errors import DivergenceError

# on_epoch(epoch, full-data loss if this epoch was logged else None); epoch 0 = before training
EpochCallback = Callable[[int, "float | None"], None]


@dataclass(frozen=True)
class LogPoint:
    epoch: int
    step: int
    loss: float


@dataclass
class History:
    points: list[LogPoint] = field(default_factory=list)

    @property
    def baseline(self) -> float:
        return self.points[0].loss

    @property
    def final(self) -> float:
        return self.points[-1].loss

    def improvement(self, loss: float) -> float:
        """Fractional drop from the baseline, e.g. 0.52 for 52 %."""
        return (self.baseline - loss) / self.baseline if self.baseline else 0.0


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size distinct row indices in [0, n), like R's sample.int(n, batch_size)."""
    return torch.randperm(n, generator=generator)[:batch_size]


def is_logged(epoch: int, cfg: TrainConfig) -> bool:
    return epoch % cfg.log_every == 0 or epoch == cfg.epochs


@torch.inference_mode()
def full_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return F.mse_loss(model(x), y).item()


def fit(
    model: nn.Module,
    params: list[nn.Parameter],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> History:
    """Train `params` of `model` in place to minimise MSE(model(x), y).

    Args:
        x: (n, d_in) inputs; y: (n, d_out) targets.
        generator: draws the batches; the same generator state gives the same batches.
    Returns:
        The logged full-data losses, epoch 0 first.
    Raises:
        DivergenceError: a step or evaluation produced a non-finite loss.
    """
    n = x.shape[0]
    steps = n // cfg.batch_size
    opt = torch.optim.Adam(params, lr=cfg.lr)
    history = History([LogPoint(0, 0, full_mse(model, x, y))])
    if on_epoch:
        on_epoch(0, history.final)
    for epoch in range(1, cfg.epochs + 1):
        for _ in range(steps):
            idx = batch_indices(n, cfg.batch_size, generator)
            loss = F.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step_loss = loss.item()
        logged = None
        if is_logged(epoch, cfg) or not math.isfinite(step_loss):
            logged = full_mse(model, x, y)
            _check_finite(logged if math.isfinite(step_loss) else step_loss, epoch, epoch * steps, history)
            history.points.append(LogPoint(epoch, epoch * steps, logged))
        if on_epoch:
            on_epoch(epoch, logged)
    return history


def _check_finite(loss: float, epoch: int, step: int, history: History) -> None:
    if not math.isfinite(loss):
        raise DivergenceError(
            f"the loss became {loss} by epoch {epoch} (step {step}); the last finite loss was "
            f"{history.final:.6g} at epoch {history.points[-1].epoch}. Lower the learning rate "
            "(--set <stage>.lr=…) and run the stage again"
        )
