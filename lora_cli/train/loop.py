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

from lora_cli.config.loading import TrainConfig
from lora_cli.errors import DivergenceError

# on_epoch(epoch, full-data loss if this epoch was logged else None); epoch 0 = before training
EpochCallback = Callable[[int, "float | None"], None]

# A loss this many times its starting value has run away. Adam moves every weight by about
# lr a step, so a huge lr can grow the loss to 1e20 while every number stays finite.
DIVERGED_FACTOR = 1e6


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


@dataclass
class TrainState:
    """All a stage needs to continue exactly where it was, taken at the end of an epoch."""

    epoch: int
    engine: str
    tensors: dict[str, torch.Tensor]  # the engine's parameters and optimiser state
    generator_state: torch.Tensor  # the batch generator's state (uint8)
    history: History


# on_checkpoint(state): called every cfg.checkpoint_every epochs (not after the last)
CheckpointCallback = Callable[[TrainState], None]


def start_history(
    evaluate: Callable[[], float],
    generator: torch.Generator,
    resume: TrainState | None,
    on_epoch: EpochCallback | None,
) -> tuple[History, int]:
    """(history, first epoch to train): the epoch-0 baseline, or where a checkpoint left off."""
    if resume is None:
        history, first = History([LogPoint(0, 0, evaluate())]), 1
    else:
        generator.set_state(resume.generator_state)
        history, first = History(list(resume.history.points)), resume.epoch + 1
    if on_epoch:
        on_epoch(first - 1, history.final if resume is None else None)
    return history, first


def maybe_checkpoint(
    epoch: int,
    cfg: TrainConfig,
    engine: str,
    tensors: Callable[[], dict[str, torch.Tensor]],
    generator: torch.Generator,
    history: History,
    on_checkpoint: CheckpointCallback | None,
) -> None:
    if on_checkpoint and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
        # copies: training goes on changing the live tensors after the callback returns
        snapshot = {k: v.detach().clone() for k, v in tensors().items()}
        on_checkpoint(TrainState(epoch, engine, snapshot, generator.get_state(), History(list(history.points))))


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
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> History:
    """Train `params` of `model` in place to minimise MSE(model(x), y).

    Args:
        x: (n, d_in) inputs; y: (n, d_out) targets.
        generator: draws the batches; the same generator state gives the same batches.
        resume: a checkpoint of this engine to continue from (bit-identical on CPU).
        on_checkpoint: receives a TrainState every cfg.checkpoint_every epochs.
    Returns:
        The logged full-data losses, epoch 0 first.
    Raises:
        DivergenceError: the loss became non-finite or ran away.
    """
    n = x.shape[0]
    steps = n // cfg.batch_size
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if resume is not None:
        _load_reference_state(params, opt, resume.tensors)
    history, first = start_history(lambda: full_mse(model, x, y), generator, resume, on_epoch)
    for epoch in range(first, cfg.epochs + 1):
        batches = epoch_batches(n, cfg.batch_size, steps, generator).to(x.device)
        for idx in batches:
            loss = F.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log_epoch(history, epoch, steps, cfg, loss.item(), lambda: full_mse(model, x, y), on_epoch)
        maybe_checkpoint(epoch, cfg, "reference", lambda: _reference_state(params, opt), generator, history, on_checkpoint)
    return history


def _reference_state(params: list[nn.Parameter], opt: torch.optim.Adam) -> dict[str, torch.Tensor]:
    tensors = {}
    for i, p in enumerate(params):
        tensors[f"param.{i}"] = p.detach()
        for key in ("step", "exp_avg", "exp_avg_sq"):
            tensors[f"adam.{i}.{key}"] = opt.state[p][key].reshape(-1) if key == "step" else opt.state[p][key]
    return tensors


def _load_reference_state(params: list[nn.Parameter], opt: torch.optim.Adam, tensors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"])
            opt.state[p] = {
                "step": tensors[f"adam.{i}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"adam.{i}.exp_avg"].clone().to(p.device),
                "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].clone().to(p.device),
            }


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
    step_diverged = diverged(step_loss, history)
    if is_logged(epoch, cfg) or step_diverged:
        logged = step_loss if step_diverged else evaluate()
        check_diverged(logged, epoch, epoch * steps, history)
        history.points.append(LogPoint(epoch, epoch * steps, logged))
    if on_epoch:
        on_epoch(epoch, logged)


def diverged(loss: float, history: History) -> bool:
    return not math.isfinite(loss) or loss > DIVERGED_FACTOR * max(history.baseline, 1e-30)


def check_diverged(loss: float, epoch: int, step: int, history: History) -> None:
    """Raise DivergenceError when `loss` is non-finite or has run away from the baseline."""
    if diverged(loss, history):
        what = f"became {loss}" if not math.isfinite(loss) else f"grew to {loss:.3g}, over {DIVERGED_FACTOR:.0e} times its start"
        raise DivergenceError(
            f"the loss {what} by epoch {epoch} (step {step}); the last good loss was "
            f"{history.final:.6g} at epoch {history.points[-1].epoch}. Lower the learning rate "
            "(--set <stage>.lr=…) and run the stage again"
        )
