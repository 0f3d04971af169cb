"""The metric stream: each point a training stage logs (epoch, step, and every metric by name:
train_loss as `loss`, test_loss, …) goes to every sink as it is logged.

A sink is a callable (stage, point, baseline) -> None: metrics.jsonl appended and flushed
(MetricsFile, so `tail -f` follows a run and a killed run keeps what it logged), and the
trackers chosen with --log-to (measure/trackers.py), which also hear the stage's final numbers
(`close`). Commands add the terminal's progress; under torchrun only rank 0 builds a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lora_cli.train.loop import History, LogPoint, improvement

Sink = Callable[[str, LogPoint, float], None]  # (stage, point, the stage's baseline loss)


def row(stage: str, point: LogPoint, baseline: float, unit: str = "epoch") -> dict[str, Any]:
    """One metrics.jsonl row: the stage, the epoch (or iteration), the step, the training loss,
    its fractional drop from the baseline, then every other metric by name."""
    return {"stage": stage, unit: point.epoch, "step": point.step, "loss": point.loss, "improvement": improvement(baseline, point.loss), **point.metrics}


def point(row: dict[str, Any], unit: str = "epoch") -> LogPoint:
    """The logged point a metrics.jsonl row was written from (see `row`)."""
    metrics = {k: v for k, v in row.items() if k not in ("stage", unit, "step", "loss", "improvement")}
    return LogPoint(row[unit], row["step"], row["loss"], metrics)


def rows(stage: str, history: History, unit: str = "epoch") -> list[dict[str, Any]]:
    """A whole history's rows, the baseline first."""
    return [row(stage, p, history.baseline, unit) for p in history.points]


class Stream:
    """One stage's points, to every sink; the first point heard is the baseline."""

    def __init__(self, stage: str, sinks: Iterable[Sink]):
        self.stage, self.sinks, self.baseline = stage, list(sinks), None

    def __call__(self, point: LogPoint) -> None:
        if self.baseline is None:
            self.baseline = point.loss
        for sink in self.sinks:
            sink(self.stage, point, self.baseline)

    def close(self, final: dict[str, Any]) -> None:
        """The stage is complete with these final numbers: sinks that keep files (trackers) close them."""
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close(final)

    def replay(self, history: History) -> None:
        """Send the points a resumed stage had logged before its checkpoint."""
        for point in history.points:
            self(point)


class MetricsFile:
    """A sink appending each row to the run folder's metrics.jsonl as it comes, flushed."""

    def __init__(self, run: Any):
        self.run = run

    def __call__(self, stage: str, point: LogPoint, baseline: float) -> None:
        self.run.append_metrics([row(stage, point, baseline)])
