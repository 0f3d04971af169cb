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


def epoch_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, batch_size) row indices for one epoch; each row is batch_size distinct rows of [0, n).

    Each step is an independent uniform draw without replacement, like the blog's
    sample.int(n, 128). Every engine uses this function, so every engine sees the same batches.
    When batch_size is small against n, draws with replacement are taken in order and repeats
    skipped, which is exactly sampling without replacement and costs O(batch_size) a step; a
    step that runs out of draws (vanishingly rare) falls back to the O(n) method.
    """
    if 4 * batch_size > n:
        return _topk_batches(n, batch_size, steps, generator)
    draws = torch.randint(n, (steps, batch_size + batch_size // 2 + 16), generator=generator)
    batches, complete = first_distinct(draws, batch_size)
    if not bool(complete.all()):
        batches[~complete] = _topk_batches(n, batch_size, int((~complete).sum()), generator)
    return batches


def first_distinct(draws: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k distinct values of each row of `draws` (steps, m), in draw order.

    Returns (steps, k) values and a (steps,) mask of rows that had k distinct values
    (the other rows hold garbage and must be replaced).
    """
    ordered, order = draws.sort(dim=1, stable=True)  # equal values keep draw order
    repeat_sorted = torch.zeros_like(draws, dtype=torch.bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]  # a later copy of a value
    first = ~torch.zeros_like(repeat_sorted).scatter_(1, order, repeat_sorted)
    rank = first.cumsum(dim=1)  # 1-based position among the distinct values
    complete = rank[:, -1] >= k
    keep = first & (rank <= k)
    keep[~complete] = False
    out = torch.zeros(draws.shape[0], k, dtype=draws.dtype)
    out[complete] = draws[keep].view(-1, k)
    return out, complete


def _topk_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    # the batch_size largest of n uniform numbers pick a uniform random subset
    return torch.rand(steps, n, generator=generator).topk(batch_size, dim=1, sorted=False).indices


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
        batches = epoch_batches(n, cfg.batch_size, steps, generator).to(x.device)
        for idx in batches:
            loss = F.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log_epoch(history, epoch, steps, cfg, loss.item(), lambda: full_mse(model, x, y), on_epoch)
    return history


def log_epoch(
    history: History,
    epoch: int,
    steps: int,
    cfg: TrainConfig,
    step_loss: float,
    evaluate: Callable[[], float],
    on_epoch: EpochCallback | None,
) -> None:
    """End-of-epoch bookkeeping shared by every engine: divergence check, logging, callback."""
    logged = None
    if is_logged(epoch, cfg) or not math.isfinite(step_loss):
        logged = evaluate() if math.isfinite(step_loss) else step_loss
        check_finite(logged, epoch, epoch * steps, history)
        history.points.append(LogPoint(epoch, epoch * steps, logged))
    if on_epoch:
        on_epoch(epoch, logged)


def check_finite(loss: float, epoch: int, step: int, history: History) -> None:
    if not math.isfinite(loss):
        raise DivergenceError(
            f"the loss became {loss} by epoch {epoch} (step {step}); the last finite loss was "
            f"{history.final:.6g} at epoch {history.points[-1].epoch}. Lower the learning rate "
            "(--set <stage>.lr=…) and run the stage again"
        )
