"""`lora export`: a run folder's stored results sent to a tracker as if it had logged them live.

A folder describes itself: each complete training stage's rows in metrics.jsonl go through
the tracker's sink as points, in order, and its record's final numbers close it, exactly what
`--log-to` sends while training. A sweep exports each trial's own stage (one tracker run per
trial) and each base it pretrained; a stage a trial shares from its base is the base's; then
the sweep itself (MLflow: the parent run, with the spec and the sweep's files).
"""

from __future__ import annotations

from lora_cli.config.sweep import load_sweep
from lora_cli.errors import RunError
from lora_cli.measure import trackers
from lora_cli.measure.stream import Stream, point
from lora_cli.stages import kinds, results
from lora_cli.stages.common import final_numbers
from lora_cli.stages.sweep_results import sweep_counts
from lora_cli.store.run_folder import CONFIG, RunFolder

TRAINING = {"pipeline": kinds.TRAINED, "approx": ("approx",), "sweep": ()}


def export(run: RunFolder, names: tuple[str, ...]) -> list[str]:
    """Send every complete training stage of `run` (and of a sweep's trials and bases) to the
    trackers `names`; where each stage's tracker run (and a sweep's own) now is."""
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
            sinks = _sending(folder, names, lambda: trackers.sinks(names, folder, stage, params, guard=False))
            out = Stream(stage, sinks)
            _sending(folder, names, lambda: [out(point(row, unit)) for row in rows if row["stage"] == stage])
            _sending(folder, names, lambda: out.close(final_numbers(record)))
            written += [sink.where for sink in sinks]
    if run.kind == "sweep":
        params = trackers.flat_params(load_sweep(run.path / CONFIG, stored=True).spec)
        written += _sending(run, names, lambda: trackers.finish(names, run, params, sweep_counts(run), guard=False))
    return written


def _sending(folder: RunFolder, names: tuple[str, ...], call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 -- the tracker's own error, worded as where it happened
        raise RunError(f"{folder.path}: sending to {', '.join(names)} failed ({trackers.first_line(exc)}); the folder is unchanged") from None
