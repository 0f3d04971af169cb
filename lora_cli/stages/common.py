"""What every stage does around its recipe: threads, resume, refusing a re-run, recording."""

from __future__ import annotations

import time
from typing import Any

from lora_cli import threads
from lora_cli.config.schemas import ApproxConfig, Config
from lora_cli.errors import DivergenceError, RunError
from lora_cli.resources import step_work
from lora_cli.store.files import utc_now
from lora_cli.store.run_folder import RunFolder
from lora_cli.train.loop import Divergence, History, TrainState


def parameter_counts(d_in: int, d_out: int, rank: int, lora: int) -> dict[str, Any]:
    """Full d_in·d_out against the rank-`rank` adapter's `lora` trainable numbers."""
    full = d_in * d_out
    return {"full": full, "lora": lora, "rank": rank, "reduction": 1 - lora / full, "compression": full / lora}


def history_rows(stage: str, history: History, unit: str = "epoch") -> list[dict[str, Any]]:
    return [
        {"stage": stage, unit: p.epoch, "step": p.step, "loss": p.loss, "improvement": history.improvement(p.loss)}
        for p in history.points
    ]


def check_divergence(divergence: Divergence | None, stage_key: str) -> None:
    """Word a divergence for the person: what happened and which key to change."""
    if divergence is not None:
        raise DivergenceError(
            f"{divergence.describe()}. Lower the learning rate (--set {stage_key}=…) and run the stage again"
        )


def finish_training(
    run: RunFolder, name: str, history: History, started: float, extra: dict, unit: str = "epoch"
) -> dict[str, Any]:
    """Record a completed training stage (metrics, then manifest, then drop its checkpoint)."""
    rows = history_rows(name, history, unit)
    run.add_metrics(rows)
    record = complete_record(started, history.baseline, history.final, extra)
    run.update_stage(name, **record)
    run.remove_checkpoint(name)  # only now: the result and its record are durable
    return {"stage": name, "run_dir": str(run.path), **record, "history": rows}


def complete_record(started: float, baseline: float, final: float, extra: dict) -> dict[str, Any]:
    """A completed stage's manifest entry: the losses every stage has, then its own fields."""
    return {
        "status": "complete",
        "finished": utc_now(),
        "seconds": time.perf_counter() - started,
        "baseline_loss": baseline,
        "final_loss": final,
        **extra,
    }


def use_threads(cfg: Config | ApproxConfig, stage: str, request: int | None) -> int:
    return threads.use(threads.choose(step_work(cfg, stage), request))


def refuse_rerun(run: RunFolder, name: str, force: bool, consequence: str) -> None:
    if force:
        return
    if run.stage(name).get("status") == "complete":
        extra = f" ({consequence})" if consequence else ""
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
    state = run.load_checkpoint(name)
    if state is not None and state.engine != engine:
        raise RunError(
            f"{run.path}: the {name} checkpoint was written by the {state.engine} engine; resume with --engine {state.engine}"
        )
    return state


def checkpointer(run: RunFolder, name: str):
    return lambda state: run.save_checkpoint(name, state)


def require_tensor(tensors: dict, key: str, shape: tuple[int, ...], path, fix: str):
    """tensors[key] when it is float32 of `shape`; else RunError naming what was found."""
    import torch

    tensor = tensors.get(key)
    if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
        found = f"no '{key}'" if tensor is None else f"{tuple(tensor.shape)} {tensor.dtype}"
        raise RunError(f"{path}: expected '{key}' of shape {shape} float32, found {found}; {fix}")
    return tensor
