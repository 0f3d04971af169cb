"""THE training loop: every engine, every stage, one epoch loop.

Each epoch draws its batches from the shared sampler (n // batch_size steps of batch_size
distinct rows), hands them to the engine, checks for divergence, logs the full-data MSE and
the engine's other metrics (the held-out test loss) on log epochs (and at epoch 0, the
baseline, and at the last epoch), and offers a checkpoint. Engines (lora_cli/train/engines.py)
supply the steps, the evaluation and their state; nothing here prints or touches a file:
progress goes to a callback, each logged point to another (the metric stream, measure/),
checkpoints to a third.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lora_cli.train.sampler import epoch_batches

# on_epoch(epoch, full-data loss if this epoch was logged else None); epoch 0 = before training
EpochCallback = Callable[[int, "float | None"], None]
TRAIN = "train_loss"  # the metric every engine's evaluate() returns: the full training data's MSE

# A loss this many times its starting value has run away. Adam moves every weight by about
# lr a step, so a huge lr can grow the loss to 1e20 while every number stays finite.
DIVERGED_FACTOR = 1e6


@dataclass(frozen=True)
class Schedule:
    """How long and how often: the loop's whole configuration."""

    epochs: int
    batch_size: int
    log_every: int
    checkpoint_every: int = 0  # 0 = never


@dataclass(frozen=True)
class LogPoint:
    epoch: int
    step: int
    loss: float  # the training data's MSE
    metrics: dict[str, float] = field(default_factory=dict)  # the others by name, e.g. {"test_loss": 0.1}


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
        return improvement(self.baseline, loss)


def improvement(baseline: float, loss: float) -> float:
    """Fractional drop from the baseline, e.g. 0.52 for 52 % (0 for a zero baseline)."""
    return (baseline - loss) / baseline if baseline else 0.0


@dataclass(frozen=True)
class Divergence:
    """Where training ran away, and the last loss that was still good."""

    epoch: int
    step: int
    loss: float
    last_good: LogPoint

    def describe(self) -> str:
        """One clause for the stage layer to put its name and advice around."""
        what = f"became {self.loss}" if not math.isfinite(self.loss) else f"grew to {self.loss:.3g}, over {DIVERGED_FACTOR:.0e} times its start"
        return (
            f"the loss {what} by epoch {self.epoch} (step {self.step}); the last good loss was "
            f"{self.last_good.loss:.6g} at epoch {self.last_good.epoch}"
        )


@dataclass
class Fit:
    """What the loop returns: the logged losses, and a Divergence when it stopped early."""

    history: History
    divergence: Divergence | None = None


@dataclass
class TrainState:
    """All a stage needs to continue exactly where it was, taken at the end of an epoch."""

    epoch: int
    engine: str
    tensors: dict[str, torch.Tensor]  # the engine's parameters and optimiser state
    generator_state: torch.Tensor  # the batch generator's state (uint8)
    history: History


# on_checkpoint(state): called every checkpoint_every epochs and after the last one (so that
# an interrupt while the result is being measured and written loses no training)
CheckpointCallback = Callable[[TrainState], None]
# on_log(point): every logged point as it is logged, the baseline first (one-lane engines)
LogCallback = Callable[[LogPoint], None]


class Engine(Protocol):
    """What the loop needs of an engine (see lora_cli/train/engines.py for the registry)."""

    name: str
    n: int  # rows of the training data

    def run_steps(self, batches: torch.Tensor) -> float:
        """One optimiser step per row of `batches` (steps, b); the last step's batch MSE."""

    def evaluate(self) -> dict[str, float]:
        """The metrics now: TRAIN (the full training data's MSE) and one per held-out split."""

    def state(self) -> dict[str, torch.Tensor]:
        """Parameters and optimiser state (live tensors; the loop copies them)."""

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state` returned."""


def train(
    engine: Engine,
    schedule: Schedule,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_log: LogCallback | None = None,
) -> Fit:
    """Run `engine` for `schedule.epochs` epochs, or from `resume` to the end.

    Args:
        generator: draws the batches; the same state gives the same batches on every engine.
        resume: a checkpoint of this engine; continuing from it is bit-identical on CPU.
        on_checkpoint: receives a TrainState every schedule.checkpoint_every epochs and at the end.
        on_log: receives each logged point as it is logged (not those `resume` holds).
    Returns:
        The logged full-data losses (epoch 0 first), and the divergence if the loss ran away.
    """
    return train_lanes(_OneLane(engine), schedule, generator, on_epoch, resume, on_checkpoint, [on_log])[0]


def train_lanes(
    engine: Any,
    schedule: Schedule,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_logs: Sequence[LogCallback | None] = (),
) -> list[Fit]:
    """`train` for an engine of several lanes (independent adapters on the same batches, as
    train/batched.py): its run_steps and evaluate return one loss per lane. A lane that diverges
    gets its Divergence and is stopped (engine.stop); the others go on. `on_epoch` hears the
    lowest logged loss of the lanes still training; `on_logs[i]`, when given, each point lane i
    logs as it is logged. Checkpoints are for one-lane engines.
    """
    steps = engine.n // schedule.batch_size
    if resume is None:
        fits, first = [Fit(History([_point(0, 0, metrics)])) for metrics in engine.evaluate()], 1
        for fit, on_log in zip(fits, on_logs):
            if on_log:
                on_log(fit.history.points[0])
    else:
        engine.load(resume.tensors)
        generator.set_state(resume.generator_state)
        fits, first = [Fit(History(list(resume.history.points)))], resume.epoch + 1
    if on_epoch:
        on_epoch(first - 1, _lowest(fits, [f.history.final for f in fits]) if resume is None else None)
    for epoch in range(first, schedule.epochs + 1):
        batches = epoch_batches(engine.n, schedule.batch_size, steps, generator)
        _check_lanes(engine, fits, engine.run_steps(batches), epoch, epoch * steps)  # no full evaluation of a runaway
        logged = None
        if (epoch % schedule.log_every == 0 or epoch == schedule.epochs) and _live(fits):
            metrics = engine.evaluate()
            losses = [m[TRAIN] for m in metrics]
            _check_lanes(engine, fits, losses, epoch, epoch * steps)
            for fit, lane, on_log in itertools.zip_longest(fits, metrics, on_logs[: len(fits)]):
                if fit.divergence is None:
                    fit.history.points.append(_point(epoch, epoch * steps, lane))
                    if on_log:
                        on_log(fit.history.points[-1])
            logged = _lowest(fits, losses)
        if not _live(fits):
            return fits
        if on_epoch:
            on_epoch(epoch, logged)
        if on_checkpoint and schedule.checkpoint_every and (epoch % schedule.checkpoint_every == 0 or epoch == schedule.epochs):
            # copies: training goes on changing the live tensors after the callback returns
            tensors = {k: v.detach().clone() for k, v in engine.state().items()}
            on_checkpoint(TrainState(epoch, engine.name, tensors, generator.get_state(), History(list(fits[0].history.points))))
    return fits


def _point(epoch: int, step: int, metrics: dict[str, float]) -> LogPoint:
    return LogPoint(epoch, step, metrics[TRAIN], {k: v for k, v in metrics.items() if k != TRAIN})


def held_out_metric(split: str) -> str:
    """The metric a held-out split's MSE is logged as: "test" -> "test_loss"."""
    return f"{split}_loss"


def evaluated(x: Any, y: Any, held_out: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """metric name -> (x, y) an engine evaluates: TRAIN on the training data, then each held-out split."""
    return {TRAIN: (x, y), **{held_out_metric(split): pair for split, pair in held_out.items()}}


class _OneLane:
    """A one-adapter engine seen as an engine of one lane."""

    def __init__(self, engine: Engine):
        self.engine, self.name, self.n = engine, engine.name, engine.n

    def run_steps(self, batches: torch.Tensor) -> list[float]:
        return [self.engine.run_steps(batches)]

    def evaluate(self) -> list[dict[str, float]]:
        return [self.engine.evaluate()]

    def stop(self, lane: int) -> None:
        pass

    def state(self) -> dict[str, torch.Tensor]:
        return self.engine.state()

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.engine.load(tensors)


def _live(fits: list[Fit]) -> bool:
    return any(fit.divergence is None for fit in fits)


def _lowest(fits: list[Fit], losses: list[float]) -> float | None:
    live = [loss for fit, loss in zip(fits, losses) if fit.divergence is None]
    return min(live) if live else None


def _check_lanes(engine: Any, fits: list[Fit], losses: list[float], epoch: int, step: int) -> None:
    for lane, (fit, loss) in enumerate(zip(fits, losses)):
        if fit.divergence is None and (divergence := diverged_at(loss, fit.history, epoch, step)):
            fit.divergence = divergence
            engine.stop(lane)


def diverged_at(loss: float, history: History, epoch: int, step: int) -> Divergence | None:
    """A Divergence when `loss` is non-finite or has run away from the baseline, else None."""
    return Divergence(epoch, step, loss, history.points[-1]) if _diverged(loss, history) else None


def _diverged(loss: float, history: History) -> bool:
    return not math.isfinite(loss) or loss > DIVERGED_FACTOR * max(history.baseline, 1e-30)
