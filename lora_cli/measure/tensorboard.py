"""The TensorBoard sink: every logged metric as a scalar, and the run's settings and final
numbers through the HParams plugin.

A stage writes into <run folder>/tensorboard/<stage>/, so `tensorboard --logdir runs` shows
each stage of each run (each trial of a sweep) as a run of its own. Scalars are named as in
metrics.jsonl (`loss` is the training loss, `test_loss`, …) and their step is the epoch (the
approx demo's: its iteration). The HParams summaries are written into the stage's own event
file, so there is no extra sub-run as `SummaryWriter.add_hparams` makes. A stage starting
again (rerun or resumed: its earlier points are replayed) first clears its folder.
"""

from __future__ import annotations

import shutil
from typing import Any

from lora_cli.measure.trackers import final_metrics, folder_of
from lora_cli.train.loop import LogPoint


class Sink:
    def __init__(self, run: Any, stage: str, hparams: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        path = run.path / folder_of("tensorboard", stage)
        shutil.rmtree(path, ignore_errors=True)
        self.writer, self.hparams, self.where = SummaryWriter(str(path)), hparams, str(path)

    def __call__(self, stage: str, point: LogPoint, baseline: float) -> None:
        self.writer.add_scalar("loss", point.loss, point.epoch)
        for name, value in point.metrics.items():
            if value is not None:
                self.writer.add_scalar(name, value, point.epoch)
        self.writer.flush()

    def close(self, final: dict[str, float]) -> None:
        """The stage's settings and final numbers (final loss, test loss, optimum, gap) for the
        HParams dashboard; then the file is closed."""
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(final)
        for summary in hparams(self.hparams, metrics):
            self.writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)
        self.writer.close()
