"""The pipeline's stages against a run folder: load what a stage needs, run its recipe,
record everything. Each returns a typed record (stages/results.py) whose numbers are the
ones in manifest.json (stages.<name>) and metrics.jsonl, so commands only print them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from lora_cli.config.loading import load_config
from lora_cli.config.schemas import RENAMED, Config
from lora_cli.methods import peft
from lora_cli.methods.inits import INITS
from lora_cli.methods.registry import method_of
from lora_cli.errors import ConfigError, RunError
from lora_cli.recipes import pipeline as recipe
from lora_cli.runtime.resources import check_memory
from lora_cli.stages import results
from lora_cli.stages.result_rows import write_run_tables
from lora_cli.stages.common import (
    check_divergence,
    checkpointer,
    finish,
    refuse_rerun,
    require_tensor,
    resume_state,
    stream,
    training_fields,
    use_threads,
)
from lora_cli.stages.results import FinetuneRecord, MergeRecord, Parameters, PretrainRecord, StageRecord
from lora_cli.stages.recording import EpochTracker, recording
from lora_cli.stages.trained_files import save_trained, to_merge
from lora_cli.config.stages import ADAPTED, BASE_STAGE, STAGES
from lora_cli.stages.kinds import ADAPTER_CONFIG, BASE, MERGED, SHIFT, run_config, save_config
from lora_cli.store.run_folder import RunFolder
from lora_cli.train.engines import Runtime
from lora_cli.train.loop import EpochCallback

R = TypeVar("R")

Overrides = list[tuple[str, str, Any]]
Note = Callable[[str], None]
FINETUNE_KEYS = ("adapter.", "finetune.", "shift.")


def _parameters(d: Any, spec: Any) -> Parameters:
    """Full against what `spec`'s method trains, on the data section's d_in x d_out layer."""
    return Parameters.count(d.d_in, d.d_out, spec.rank, method_of(spec).parameter_count(spec, d.d_in, d.d_out), spec.method)


def _runtime_fields(runtime: Runtime, n_threads: int, state) -> dict[str, Any]:
    resumed = state.epoch if state else None
    return {"engine": runtime.engine, "device": runtime.device, "threads": n_threads, "resumed_from_epoch": resumed}


def _optimum(enabled: bool, final_loss: float, compute: Callable[[], recipe.Optimum], note: Note | None) -> dict[str, Any]:
    """The record's optimum fields: the float64 floor beside the final loss (empty when off)."""
    if not enabled:
        return {}
    if note:
        note("Computing the optimum in float64 (seconds at the blog's size; set optimum: false to skip)")
    start = time.perf_counter()
    optimum = compute()
    seconds = time.perf_counter() - start + (optimum.seconds or 0.0)
    fields = {"optimal_loss": optimum.loss, "gap": final_loss - optimum.loss, "optimum_seconds": seconds}
    return fields if optimum.population is None else {**fields, "population_optimal_loss": optimum.population}


def _merge_subspace(run: RunFolder, cfg: Config, base: Any, delta: Any, spec: Any, adapter: Any, source: Any) -> dict[str, Any]:
    """The merge record's subspace diagnostics of ΔW and their seconds (none when
    finetune.subspace is off): the finetune's own for the run's adapter (the same ΔW), else the
    imported adapter's, from its factors where it has them."""
    if not cfg.finetune.subspace:
        return {}
    start = time.perf_counter()
    own = run.stage(ADAPTED).get("subspace") if source is None else None
    if own is None:
        rank = spec.rank if source else cfg.adapter.rank
        own = recipe.diagnostics(cfg, base, delta, rank, method_of(spec).factors(spec, adapter)).to_dict()
    return {"subspace": own, "subspace_seconds": time.perf_counter() - start}


def pretrain_stage(
    run: RunFolder, cfg: Config, runtime: Runtime, on_epoch: EpochCallback | None = None, resume: bool = False, note: Note | None = None
) -> PretrainRecord:
    """Pretrain the full-rank base into `run`; with `resume`, continue from its checkpoint.
    `note` hears of slow steps after training (the optimum)."""
    n_threads = use_threads(cfg, "pretrain", runtime.threads)
    check_memory(cfg, "pretrain")
    runtime = runtime.resolved(None)
    state = resume_state(run, "pretrain", runtime.engine) if resume else None
    tracker = EpochTracker(on_epoch)
    with recording(run, "pretrain", resume, tracker):
        start = time.perf_counter()
        out = stream(run, "pretrain", state, runtime.log_to, cfg)
        result = recipe.pretrain(cfg, runtime, tracker, state, checkpointer(run, "pretrain"), out)
        check_divergence(result.divergence, "pretrain.lr")
        run.save_tensors(BASE, {"weight": result.weight})
        fields = training_fields(run, "pretrain", result.history, start)
        fields |= _optimum(cfg.pretrain.optimum, fields["final_loss"], lambda: recipe.pretrain_optimum(cfg, result.data), note)
        record = PretrainRecord(**fields, **_runtime_fields(runtime, n_threads, state), parameters=_parameters(cfg.data, cfg.adapter.spec()))
        return _finish(run, cfg, record, out)


def finetune_config(run: RunFolder, overrides: Overrides) -> Config:
    """The run's config with `overrides`, which may change adapter.*, finetune.* and shift.* only."""
    for source, key, _ in overrides:
        if not RENAMED.get(key, key).startswith(FINETUNE_KEYS):
            raise ConfigError(
                f"{source}: {key} was fixed when {run.path} was pretrained; only adapter.*, finetune.* "
                f"and shift.* can change now. For a different {key}, start a new run: lora run CONFIG --set {key}=…"
            )
    return load_config(base=run_config(run).to_dict(), overrides=overrides)


def finetune_stage(
    run: RunFolder,
    cfg: Config,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    force: bool = False,
    resume: bool = False,
    note: Note | None = None,
) -> FinetuneRecord:
    """Train the adapter on the run's frozen base; `cfg` comes from `finetune_config`."""
    run.require_complete("pretrain", f"run `lora pretrain --run-dir {run.path}` first")
    if not resume:
        refuse_rerun(run, "finetune", force, "the merge built on it is discarded")
    check_memory(cfg, "finetune")
    runtime = runtime.resolved(cfg.adapter.method)
    base = load_base(run, cfg)
    state = resume_state(run, "finetune", runtime.engine) if resume else None
    n_threads = use_threads(cfg, "finetune", runtime.threads)
    tracker = EpochTracker(on_epoch)
    with recording(run, "finetune", resume, tracker):
        save_config(run, cfg)
        start = time.perf_counter()
        out = stream(run, "finetune", state, runtime.log_to, cfg)
        result = recipe.finetune(cfg, base, runtime, tracker, state, checkpointer(run, "finetune"), out)
        fields = _runtime_fields(runtime, n_threads, state)
        return record_finetune(run, cfg, base, result, time.perf_counter() - start, fields, note=note, out=out)


def record_finetune(
    run: RunFolder,
    cfg: Config,
    base: Any,
    result: recipe.FinetuneResult,
    seconds: float,
    runtime_fields: dict[str, Any],
    optimum: Callable[[], recipe.Optimum] | None = None,
    diagnose: Callable[[Any, int], Any] | None = None,
    note: Note | None = None,
    out: Any = None,
) -> FinetuneRecord:
    """Store a trained adapter (PEFT layout), the shift and the finetune record in `run`, inside
    its `recording("finetune")`; a divergence raises DivergenceError instead. `optimum` and
    `diagnose` (ΔW, rank -> Diagnostics) stand in for the recipe's own when a sweep shares them."""
    check_divergence(result.divergence, "finetune.lr")
    spec = result.spec
    stored, exported = save_trained(run, spec, result)
    run.save_tensors(SHIFT, {"true_delta": result.true_delta})
    fields = {**training_fields(run, "finetune", result.history, time.perf_counter()), "seconds": seconds}
    fields |= _optimum(cfg.finetune.optimum, fields["final_loss"], optimum or (lambda: recipe.finetune_optimum(cfg, base, result)), note)
    method, start = method_of(stored), time.perf_counter()
    delta = method.delta(base, stored, exported) if cfg.finetune.subspace or cfg.finetune.frontier or cfg.finetune.weight_decay else None
    if cfg.finetune.subspace:
        factors = method.factors(stored, exported)
        diagnose = diagnose or (lambda d, r: recipe.diagnostics(cfg, base, d, r, factors, result))
        fields |= {"subspace": diagnose(delta, spec.rank).to_dict(), "subspace_seconds": time.perf_counter() - start}
    if cfg.finetune.frontier:
        fields["frontier"] = recipe.frontier_of(cfg, base, delta, spec.rank)
    fields["decay"] = recipe.decay_of(cfg, base, result, delta)
    record = FinetuneRecord(
        **fields,
        **runtime_fields,
        parameters=_parameters(cfg.data, spec),
        rank=spec.rank,
        alpha=spec.alpha,
        scaling=spec.scaling,
        init=spec.init,
        scaling_rule=spec.scaling_rule,
        lr_ratio=spec.lr_ratio,
        init_reads=INITS[spec.init].reads,
        init_rows=cfg.rows(BASE_STAGE if INITS[spec.init].reads == "source_inputs" else ADAPTED) if INITS[spec.init].reads else None,
        method=spec.method,
        seed=recipe.adapter_seed(cfg),
        base_sha256=run.manifest()["files"][BASE]["sha256"],
    )
    return _finish(run, cfg, record, out)


def _finish(run: RunFolder, cfg: Config, record: R, out) -> R:
    """Record a training stage, then rewrite the run's results row and curves (results.csv, curves.csv)."""
    finish(run, record, out)
    write_run_tables(run, cfg.to_dict())
    return record


def merge_stage(run: RunFolder, force: bool = False, threads: int | None = None, adapter_dir: Path | None = None) -> MergeRecord:
    """Merge the run's adapter (or the PEFT adapter folder `adapter_dir`) into the base, save
    merged.safetensors and report the checks. Everything is computed and checked before the
    stage starts, so a failure leaves the previous merge as it was."""
    cfg = run_config(run)
    needed = ("finetune", "lora finetune") if adapter_dir is None else ("pretrain", "lora pretrain")
    run.require_complete(needed[0], f"run `{needed[1]} --run-dir {run.path}` first")
    refuse_rerun(run, "merge", force, "")
    check_memory(cfg, "merge")
    base = load_base(run, cfg)
    spec, adapter, source = to_merge(run, cfg, base, adapter_dir)
    n_threads = use_threads(cfg, "merge", threads)
    start = time.perf_counter()
    result = recipe.merge(cfg, base, spec, adapter)
    losses = (result.base_loss, result.adapter_loss, result.merged_loss, result.max_abs_diff)
    if not (bool(result.merged.isfinite().all()) and all(map(math.isfinite, losses))):
        where = adapter_dir / peft.CONFIG_FILE if adapter_dir else run.path / ADAPTER_CONFIG
        raise RunError(f"{where}: merging gives non-finite weights or losses (scaling {spec.scaling:.3g} times B·A overflows float32); nothing was written")
    record = MergeRecord(
        stage="merge",
        run_dir=str(run.path),
        seconds=time.perf_counter() - start,
        baseline_loss=result.base_loss,
        final_loss=result.merged_loss,
        threads=n_threads,
        adapter_loss=result.adapter_loss,
        max_abs_diff=result.max_abs_diff,
        test_loss=result.test_loss,
        source_loss=result.source_loss,
        delta_mean=result.delta.mean().item(),
        # the sample std of one number is undefined: null, not NaN (and no torch warning)
        delta_std=result.delta.std().item() if result.delta.numel() > 1 else None,
        delta_corner=result.delta.T[:5, :5].tolist(),  # blog layout Δθ (d_in, d_out), as the blog prints it
        adapter_source=source,
        **_merge_subspace(run, cfg, base, result.delta, spec, adapter, source),
    )
    with recording(run, "merge"):
        run.save_tensors(MERGED, {"weight": result.merged})
        return finish(run, record)


def load_base(run: RunFolder, cfg: Config):
    """base.safetensors, checked against its hash and against the config's shape and dtype."""
    tensors = run.load_tensors(BASE)
    return require_tensor(tensors, "weight", (cfg.data.d_out, cfg.data.d_in), run.path / BASE, run.fix())


def continued(run: RunFolder, stages: tuple[str, ...]) -> tuple[str, ...]:
    """Of `stages`, about to run under --resume, those that continue from a checkpoint: the
    ones not recorded complete (a complete one that runs again was damaged: it starts over)."""
    return tuple(s for s in stages if run.stage(s).get("status") != "complete")


def run_all(
    run: RunFolder,
    cfg: Config,
    runtime: Runtime,
    kept: tuple[str, ...],
    resume: tuple[str, ...],
    progress: Callable[[str, int], AbstractContextManager[EpochCallback]],
    on_report: Callable[[StageRecord], None],
    note: Note | None = None,
) -> dict[str, StageRecord]:
    """pretrain, finetune and merge in turn (`lora run`): the stages in `kept` (see kept_stages)
    are kept, those in `resume` continue from their checkpoints, the others run afresh.

    `progress(stage, epochs)` gives each training stage its epoch callback; `on_report` sees
    each stage's record as it completes (a kept one has `kept` set).
    """
    reports = {}
    for name, stage in STAGES.items():
        if name in kept:
            report = results.load(run, name, kept=True)
        elif not stage.trains:
            report = merge_stage(run, force=True, threads=runtime.threads)
        else:
            with progress(name, stage.section(cfg).epochs) as on_epoch:
                if stage.on_base:  # not kept, so meant to run: force past a complete one
                    report = finetune_stage(run, cfg, runtime, on_epoch, force=True, resume=name in resume, note=note)
                else:
                    report = pretrain_stage(run, cfg, runtime, on_epoch, resume=name in resume, note=note)
        on_report(report)
        reports[name] = report
    return reports
