"""`lora export`: a run folder's stored results sent to a tracker as if it had logged them live.

A folder describes itself: each complete training stage's rows in metrics.jsonl go through
the tracker's sink as points, in order, and its record's final numbers close it, exactly what
`--log-to` sends while training. A sweep exports each trial's own stage (one tracker run per
trial) and each base it pretrained; a stage a trial shares from its base is the base's.
"""

from __future__ import annotations

from pathlib import Path

from lora_cli.measure import trackers
from lora_cli.measure.stream import Stream, point
from lora_cli.stages import kinds, results
from lora_cli.stages.common import final_numbers
from lora_cli.store.run_folder import RunFolder

TRAINING = {"pipeline": kinds.TRAINED, "approx": ("approx",), "sweep": ()}


def export(run: RunFolder, names: tuple[str, ...]) -> list[Path]:
    """Send every complete training stage of `run` (and of a sweep's trials and bases) to the
    trackers `names`; the folders that now hold each stage's tracker run."""
    written = []
    folders = [run, *run.children(kinds.LAYOUTS).values()] if run.kind == "sweep" else [run]
    for folder in folders:
        stages = [s for s in TRAINING[folder.kind] if folder.stage(s).get("status") == "complete" and not folder.stage(s).get("shared_from")]
        if not stages:
            continue
        params = trackers.flat_params(kinds.run_config(folder).to_dict())
        rows, unit = folder.metrics(), "iteration" if folder.kind == "approx" else "epoch"
        for stage in stages:
            record = results.load(folder, stage)
            out = Stream(stage, trackers.sinks(names, folder, stage, params))
            for row in rows:
                if row["stage"] == stage:
                    out(point(row, unit))
            out.close(final_numbers(record))
            written.append(folder.path / trackers.folder_of(names[0], stage))
    return written
