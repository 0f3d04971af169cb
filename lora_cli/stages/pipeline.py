"""Stages against a run folder: load what a stage needs, run it, record everything.

Each stage returns a JSON-ready report; the same numbers go to manifest.json
(stages.<name>) and metrics.jsonl, so the CLI only has to print them.
"""

from __future__ import annotations

import time
from typing import Any

from lora_cli import threads
from lora_cli.recipes import approx
from lora_cli.store import peft_format
from lora_cli.recipes import pipeline
from lora_cli.core.adapter import lora_parameter_count
from lora_cli.config.loading import ApproxConfig, Config, load_config
from lora_cli.errors import ConfigError, RunError
from lora_cli.store.files import utc_now
from lora_cli.stages.recording import EpochTracker, recording
from lora_cli.resources import check_memory, step_work
from lora_cli.store.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, APPROX, BASE, MERGED, RunFolder
from lora_cli.train.loop import EpochCallback, History, TrainState

Overrides = list[tuple[str, str, Any]]
FINETUNE_KEYS = ("finetune.", "shift.")


def parameter_counts(d_in: int, d_out: int, rank: int) -> dict[str, Any]:
    full, lora = d_in * d_out, lora_parameter_count(d_in, d_out, rank)
    return {"full": full, "lora": lora, "rank": rank, "reduction": 1 - lora / full, "compression": full / lora}


def history_rows(stage: str, history: History, unit: str = "epoch") -> list[dict[str, Any]]:
    return [
        {"stage": stage, unit: p.epoch, "step": p.step, "loss": p.loss, "improvement": history.improvement(p.loss)}
        for p in history.points
    ]


def _finish_training(
    run: RunFolder, name: str, history: History, seconds: float, extra: dict, unit: str = "epoch"
) -> dict[str, Any]:
    rows = history_rows(name, history, unit)
    run.add_metrics(rows)
    record = {
        "status": "complete",
        "finished": utc_now(),
        "seconds": seconds,
        "baseline_loss": history.baseline,
        "final_loss": history.final,
        **extra,
    }
    run.update_stage(name, **record)
    run.remove_checkpoint(name)  # only now: the result and its record are durable
    return {"stage": name, "run_dir": str(run.path), **record, "history": rows}


def pretrain_stage(
    run: RunFolder,
    cfg: Config,
    on_epoch: EpochCallback | None = None,
    engine: str = "fast",
    device: str = "cpu",
    resume: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Pretrain the full-rank base into `run`; with `resume`, continue from its checkpoint.

    `threads`: CPU threads, or None to choose by the size of a step (lora_cli/threads.py).
    """
    dev = str(pipeline.resolve_device(device))
    n_threads = _use_threads(cfg, "pretrain", threads)
    check_memory(cfg, "pretrain")
    state = _resume_state(run, "pretrain", engine) if resume else None
    tracker = EpochTracker(on_epoch)
    with recording(run, "pretrain", resume, tracker):
        start = time.perf_counter()
        result = pipeline.pretrain(cfg, tracker, engine, dev, state, _checkpointer(run, "pretrain"))
        run.save_tensors(BASE, {"weight": result.weight})
        extra = {
            "engine": engine,
            "device": dev,
            "threads": n_threads,
            "resumed_from_epoch": state.epoch if state else None,
            "parameters": parameter_counts(cfg.data.d_in, cfg.data.d_out, cfg.finetune.rank),
        }
        return _finish_training(run, "pretrain", result.history, time.perf_counter() - start, extra)


def finetune_config(run: RunFolder, overrides: Overrides) -> Config:
    """The run's config with `overrides`, which may change finetune.* and shift.* only."""
    for source, key, _ in overrides:
        if not key.startswith(FINETUNE_KEYS):
            raise ConfigError(
                f"{source}: {key} was fixed when {run.path} was pretrained; only finetune.* and shift.* "
                f"can change now. For a different {key}, start a new run: lora run CONFIG --set {key}=…"
            )
    return load_config(base=run.config().to_dict(), overrides=overrides)


def finetune_stage(
    run: RunFolder,
    cfg: Config,
    on_epoch: EpochCallback | None = None,
    force: bool = False,
    engine: str = "fast",
    device: str = "cpu",
    resume: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the adapter on the run's frozen base; `cfg` comes from `finetune_config`."""
    dev = str(pipeline.resolve_device(device))
    run.require_complete("pretrain", f"run `lora pretrain --run-dir {run.path}` first")
    if not resume:
        _refuse_rerun(run, "finetune", force, "the merge built on it is discarded")
    check_memory(cfg, "finetune")
    base = load_base(run, cfg)
    base_sha = run.manifest()["files"][BASE]["sha256"]
    state = _resume_state(run, "finetune", engine) if resume else None
    n_threads = _use_threads(cfg, "finetune", threads)
    tracker = EpochTracker(on_epoch)
    with recording(run, "finetune", resume, tracker):
        run.write_config(cfg)
        start = time.perf_counter()
        result = pipeline.finetune(cfg, base, tracker, engine, dev, state, _checkpointer(run, "finetune"))
        spec = pipeline.lora_spec(cfg)
        run.save_tensors(ADAPTER_WEIGHTS, peft_format.adapter_state_dict(result.lora_A, result.lora_B))
        run.save_json(ADAPTER_CONFIG, peft_format.adapter_config(spec))
        extra = {
            "rank": spec.rank,
            "alpha": spec.alpha,
            "scaling": spec.scaling,
            "init": spec.init,
            "engine": engine,
            "device": dev,
            "threads": n_threads,
            "resumed_from_epoch": state.epoch if state else None,
            "base_sha256": base_sha,
            "parameters": parameter_counts(cfg.data.d_in, cfg.data.d_out, cfg.finetune.rank),
        }
        return _finish_training(run, "finetune", result.history, time.perf_counter() - start, extra)


def merge_stage(run: RunFolder, force: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Merge the adapter into the base, save merged.safetensors and report the checks."""
    cfg = run.config()
    trained = run.require_complete("finetune", f"run `lora finetune --run-dir {run.path}` first")
    _refuse_rerun(run, "merge", force, "")
    check_memory(cfg, "merge")
    base = load_base(run, cfg)
    if run.manifest()["files"][BASE]["sha256"] != trained.get("base_sha256"):
        raise RunError(
            f"{run.path / BASE}: is not the base the adapter was trained on (SHA-256 differs); "
            f"rerun `lora finetune --run-dir {run.path} --force`"
        )
    lora_a, lora_b = _load_adapter(run, cfg)
    n_threads = _use_threads(cfg, "merge", threads)
    with recording(run, "merge"):
        start = time.perf_counter()
        result = pipeline.merge(cfg, base, lora_a, lora_b)
        run.save_tensors(MERGED, {"weight": result.merged})
        delta_theta = result.delta.T  # blog layout Δθ (d_in, d_out), as the blog prints it
        record = {
            "status": "complete",
            "finished": utc_now(),
            "seconds": time.perf_counter() - start,
            "baseline_loss": result.base_loss,
            "final_loss": result.merged_loss,
            "base_loss_on_shifted": result.base_loss,
            "adapter_loss": result.adapter_loss,
            "merged_loss": result.merged_loss,
            "max_abs_diff": result.max_abs_diff,
            "delta_mean": result.delta.mean().item(),
            # the sample std of one number is undefined: null, not NaN (and no torch warning)
            "delta_std": result.delta.std().item() if result.delta.numel() > 1 else None,
            "delta_corner": delta_theta[:5, :5].tolist(),
            "threads": n_threads,
        }
        run.update_stage("merge", **record)
        return {"stage": "merge", "run_dir": str(run.path), **record}


def approx_stage(
    run: RunFolder, cfg: ApproxConfig, on_log: approx.LogCallback | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Fit A·B to W and set the result beside the Eckart–Young optimum."""
    check_memory(cfg, "approx")
    n_threads = _use_threads(cfg, "approx", threads)
    with recording(run, "approx"):
        start = time.perf_counter()
        problem = approx.make_problem(cfg)
        result = approx.fit(problem, cfg, on_log)
        run.save_tensors(APPROX, {"target": problem.target, "A": result.a, "B": result.b})
        optimum = approx.optimal_loss(problem.target, cfg.rank)
        gap = result.final_loss - optimum
        extra = {
            "final_loss": result.final_loss,  # after the last step; the history ends before it
            "optimal_loss": optimum,
            "gap": gap,
            "gap_relative": gap / optimum if optimum > 0 else None,
            "singular_values": approx.singular_values(problem.target).tolist(),
            "rank": cfg.rank,
            "iterations": cfg.iterations,
            "threads": n_threads,
            "parameters": parameter_counts(cfg.d_in, cfg.d_out, cfg.rank),
        }
        return _finish_training(run, "approx", result.history, time.perf_counter() - start, extra, unit="iteration")


def _use_threads(cfg: Config | ApproxConfig, stage: str, request: int | None) -> int:
    return threads.use(threads.choose(step_work(cfg, stage), request))


def _refuse_rerun(run: RunFolder, name: str, force: bool, consequence: str) -> None:
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


def _resume_state(run: RunFolder, name: str, engine: str) -> TrainState | None:
    """The checkpoint to continue from; None (start the stage over) when there is none yet."""
    if run.stage(name).get("status") == "complete":
        raise RunError(f"{run.path}: {name} is already complete; there is nothing to resume")
    state = run.load_checkpoint(name)
    if state is not None and state.engine != engine:
        raise RunError(
            f"{run.path}: the {name} checkpoint was written by the {state.engine} engine; resume with --engine {state.engine}"
        )
    return state


def _checkpointer(run: RunFolder, name: str):
    return lambda state: run.save_checkpoint(name, state)


def load_base(run: RunFolder, cfg: Config):
    """base.safetensors, checked against its hash and against the config's shape and dtype."""
    tensors = run.load_tensors(BASE, "pretrain")
    fix = f"rerun `lora pretrain --run-dir {run.path} --force`"
    return _require_tensor(tensors, "weight", (cfg.data.d_out, cfg.data.d_in), run.path / BASE, fix)


def _require_tensor(tensors: dict, key: str, shape: tuple[int, ...], path, fix: str):
    """tensors[key] when it is float32 of `shape`; else RunError naming what was found."""
    import torch

    tensor = tensors.get(key)
    if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
        found = f"no '{key}'" if tensor is None else f"{tuple(tensor.shape)} {tensor.dtype}"
        raise RunError(f"{path}: expected '{key}' of shape {shape} float32, found {found}; {fix}")
    return tensor


def _load_adapter(run: RunFolder, cfg: Config):
    tensors = run.load_tensors(ADAPTER_WEIGHTS, "finetune")
    d, r = cfg.data, cfg.finetune.rank
    fix = f"rerun `lora finetune --run-dir {run.path} --force`"
    lora_a = _require_tensor(tensors, peft_format.KEY_A, (r, d.d_in), run.path / ADAPTER_WEIGHTS, fix)
    lora_b = _require_tensor(tensors, peft_format.KEY_B, (d.d_out, r), run.path / ADAPTER_WEIGHTS, fix)
    saved = run.load_json(ADAPTER_CONFIG, "finetune")
    if saved.get("r") != r or saved.get("lora_alpha") != cfg.finetune.alpha:
        raise RunError(
            f"{run.path / ADAPTER_CONFIG}: r/lora_alpha ({saved.get('r')}, {saved.get('lora_alpha')}) do not match "
            f"config.yaml ({r}, {cfg.finetune.alpha}); {fix}"
        )
    return lora_a, lora_b
