"""What every stage does around its recipe: threads, resume, refusing a re-run, recording."""

from __future__ import annotations

import time
from typing import Any, TypeVar

from lora_cli.runtime import threads
from lora_cli.config.schemas import ApproxConfig, Config
from lora_cli.errors import DivergenceError, RunError
from lora_cli.runtime.resources import step_work
from lora_cli.stages import results
from lora_cli.stages.results import TrainingRecord
from lora_cli.store.run_folder import RunFolder
from lora_cli.measure import trackers
from lora_cli.measure.stream import MetricsFile, Stream, rows
from lora_cli.train.checkpoint import decode, encode
from lora_cli.train.loop import Divergence, History, TrainState

R = TypeVar("R")


def check_divergence(divergence: Divergence | None, stage_key: str) -> None:
    """Word a divergence for the person: what happened and which key to change."""
    if divergence is not None:
        raise DivergenceError(
            f"{divergence.describe()}. Lower the learning rate (--set {stage_key}=…) and run the stage again"
        )


def finish(run: RunFolder, record: R, out: Stream | None = None) -> R:
    """Record a completed stage: its metrics lines, then its manifest entry, then drop its
    checkpoint (only now, when the result and its record are durable); then the stage's stream
    `out` hears its final numbers."""
    entry = record.entry()
    entry["record_sha256"] = results.entry_digest(entry)  # resume checks the record against it
    if isinstance(record, TrainingRecord):
        run.set_metrics(record.stage, record.history)
        entry["metrics_sha256"] = run.metrics_digest(record.stage)  # resume checks the rows against it
    run.update_stage(record.stage, **entry)
    run.remove_checkpoint(record.stage)
    if out is not None:
        out.close(final_numbers(record))
    return record


def final_numbers(record: Any) -> dict[str, float]:
    """What trackers hear when a stage completes: the record's FINAL numbers it has."""
    return {key: getattr(record, key) for key in FINAL if getattr(record, key, None) is not None}


def training_fields(run: RunFolder, stage: str, history: History, started: float, unit: str = "epoch") -> dict[str, Any]:
    """The fields every training stage's record has, from its history."""
    return {
        "stage": stage,
        "run_dir": str(run.path),
        "seconds": time.perf_counter() - started,
        "baseline_loss": history.baseline,
        "final_loss": history.final,
        "history": rows(stage, history, unit),
        "final_test_loss": history.points[-1].metrics.get("test_loss"),
        "final_source_loss": history.points[-1].metrics.get("source_loss"),
    }


def use_threads(cfg: Config | ApproxConfig, stage: str, request: int | None) -> int:
    return threads.use(threads.choose(step_work(cfg, stage), request))


def refuse_rerun(run: RunFolder, name: str, force: bool, consequence: str) -> None:
    if force:
        return
    if run.stage(name).get("status") == "complete":
        extra = f" ({consequence})" if consequence else ""
        problem = results.problem(run, name)  # a result that is gone or damaged is not worded as complete
        if problem:
            raise RunError(f"{run.path}: {name} is recorded complete, but {problem}; pass --force to run it again{extra}")
        raise RunError(f"{run.path}: {name} is already complete; pass --force to run it again{extra}")
    epoch = run.interrupted(name)
    if epoch is not None:
        raise RunError(
            f"{run.path}: {name} was interrupted (checkpoint at epoch {epoch}); continue it with --resume, "
            "or pass --force to start it over"
        )


def resume_state(run: RunFolder, name: str, engine: str) -> TrainState | None:
    """The checkpoint to continue from; None (start the stage over) when there is none yet."""
    if run.stage(name).get("status") == "complete":
        raise RunError(f"{run.path}: {name} is already complete; there is nothing to resume")
    path = run.checkpoint_file(name)
    state = decode(path, name) if path is not None else None
    if state is not None and state.engine != engine:
        raise RunError(
            f"{run.path}: the {name} checkpoint was written by the {state.engine} engine; resume with --engine {state.engine}"
        )
    return state


FINAL = ("final_loss", "final_test_loss", "final_source_loss", "optimal_loss", "gap", "population_optimal_loss")  # what trackers hear at the end


def stream(run: RunFolder, name: str, state: TrainState | None, log_to: tuple[str, ...] = (), cfg: Any = None) -> Stream:
    """Stage `name`'s metric stream into the run folder and the trackers `log_to` (with the
    config's keys as their parameters); its rows before `state`'s checkpoint are sent again
    first (start_stage dropped them with the rest of the stage)."""
    params = trackers.flat_params(cfg.to_dict()) if log_to and cfg is not None else {}
    out = Stream(name, [MetricsFile(run), *trackers.sinks(log_to, run, name, params)])
    if state is not None:
        out.replay(state.history)
    return out


def checkpointer(run: RunFolder, name: str):
    return lambda state: run.save_checkpoint(name, encode(name, state), state.epoch)


def require_tensor(tensors: dict, key: str, shape: tuple[int, ...], path, fix: str):
    """tensors[key] when it is float32 of `shape`; else RunError naming what was found."""
    import torch

    tensor = tensors.get(key)
    if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
        found = f"no '{key}'" if tensor is None else f"{tuple(tensor.shape)} {tensor.dtype}"
        raise RunError(f"{path}: expected '{key}' of shape {shape} float32, found {found}; {fix}")
    return tensor
