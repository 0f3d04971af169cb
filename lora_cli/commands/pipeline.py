"""`lora pretrain`, `lora finetune`, `lora merge` and `lora run`: the blog pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lora_cli.commands.folders import create_run, engine_flag, open_run, resume_hint, runtime, write_plots
from lora_cli.commands.options import (
    AlphaOpt,
    ConfigOpt,
    Device,
    DeviceOpt,
    Engine,
    EngineOpt,
    ForceOpt,
    JsonOpt,
    NewRunDirOpt,
    PlotOpt,
    RankOpt,
    ResumeOpt,
    RunDirOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    collect_overrides,
    number_option,
    thread_count,
)
from lora_cli.commands.output import Output
from lora_cli.errors import ConfigError

EpochsOpt = number_option("--epochs", "Training epochs of this stage.")
BothEpochsOpt = number_option("--epochs", "Epochs of both training stages.")
PIPELINE = ("pretrain", "finetune", "merge")


def pretrain(
    config: ConfigOpt = None,
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = Engine.fast,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 1: pretrain a full-rank nn.Linear on y = X·θ into a new run folder."""
    overrides = collect_overrides(sets, {"--epochs": (("pretrain.epochs",), epochs), "--seed": (("seed",), seed)})
    out = Output(as_json)
    rt = runtime(engine, device, threads)
    from lora_cli.config.loading import load_config

    if resume:
        _no_changes_on_resume(config is not None or overrides)
        run = open_run(run_dir, out)
        from lora_cli.stages.kinds import run_config

        cfg = run_config(run)
    else:
        cfg = load_config(config, overrides)
        run = create_run(cfg, run_dir, force, out, PIPELINE)
    with resume_hint(f"lora pretrain --resume --run-dir {run.path}{engine_flag(rt)}"):
        report = _pretrain(run, cfg, out, rt, resume)
    out.emit(report)
    out.note(f"Next: lora finetune --rank {cfg.adapter.rank} --run-dir {run.path}")


def finetune(
    run_dir: RunDirOpt = None,
    rank: RankOpt = None,
    alpha: AlphaOpt = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    engine: EngineOpt = Engine.fast,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: shift θ, draw new data and train a rank-r adapter on the frozen base."""
    flags = {"--rank": (("adapter.rank",), rank), "--alpha": (("adapter.alpha",), alpha), "--epochs": (("finetune.epochs",), epochs)}
    overrides = collect_overrides(sets, flags)
    from lora_cli.config.loading import check_values

    check_values(overrides)  # a bad value is a usage error, whatever the run folder holds
    if resume:
        _no_changes_on_resume(bool(overrides))
    rt = runtime(engine, device, threads)
    out = Output(as_json)
    run = open_run(run_dir, out)
    with resume_hint(f"lora finetune --resume --run-dir {run.path}{engine_flag(rt)}"):
        from lora_cli.stages import pipeline as stages

        cfg = stages.finetune_config(run, overrides)
        report = _finetune(run, cfg, out, rt, force, resume)
    out.emit(report)
    out.note(f"Next: lora merge --run-dir {run.path}")


def merge(run_dir: RunDirOpt = None, threads: ThreadsOpt = None, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """Stage 3: merge W' = W + scaling·B·A, save it, and check it against the adapter."""
    out = Output(as_json)
    request = thread_count(threads)
    run = open_run(run_dir, out)
    with resume_hint(f"run `lora merge --run-dir {run.path}` again"):
        report = _merge(run, out, force, request)
    out.emit(report)


def run(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config, e.g. configs/posit.yaml.")],
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    rank: RankOpt = None,
    alpha: AlphaOpt = None,
    epochs: BothEpochsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = Engine.fast,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    plot: PlotOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """All three stages (pretrain, finetune, merge) into one fresh run folder.

    With --resume, finish an interrupted run instead: complete stages are kept, an
    interrupted one continues from its checkpoint, the rest run.
    """
    flags = {
        "--rank": (("adapter.rank",), rank),
        "--alpha": (("adapter.alpha",), alpha),
        "--epochs": (("pretrain.epochs", "finetune.epochs"), epochs),
        "--seed": (("seed",), seed),
    }
    from lora_cli.config.loading import load_config

    cfg = load_config(config, collect_overrides(sets, flags))
    rt = runtime(engine, device, threads)
    out = Output(as_json)
    if resume:
        folder = open_run(run_dir, out)
        from lora_cli.stages.kinds import run_config

        if run_config(folder) != cfg:
            raise ConfigError(f"{config}: differs from {folder.path}/config.yaml; resume with the run's own config, or start a new run")
    else:
        folder = create_run(cfg, run_dir, force, out, PIPELINE)
    with resume_hint(f"lora run {config} --resume --run-dir {folder.path}{engine_flag(rt)}"):
        from lora_cli.stages import pipeline as stages

        reports = stages.run_all(folder, cfg, rt, resume, out.progress, lambda report: _show(out, report, cfg))
    result = {"run_dir": str(folder.path), "stages": reports}
    if plot:
        result["figures"] = write_plots(folder, out)
    out.emit(result)
    out.note(f"All stages complete in {folder.path}; list runs with: lora runs")


# ---- printing ----------------------------------------------------------------


def _no_changes_on_resume(changed: bool) -> None:
    if changed:
        raise ConfigError("--resume continues a run exactly as configured; leave out -c, --set and the other config flags")


def _pretrain(run, cfg, out: Output, rt, resume: bool) -> dict[str, Any]:
    from lora_cli.stages import pipeline as stages

    with out.progress("pretrain", cfg.pretrain.epochs) as on_epoch:
        report = stages.pretrain_stage(run, cfg, rt, on_epoch, resume)
    _show(out, report, cfg)
    return report


def _finetune(run, cfg, out: Output, rt, force: bool, resume: bool) -> dict[str, Any]:
    from lora_cli.stages import pipeline as stages

    with out.progress("finetune", cfg.finetune.epochs) as on_epoch:
        report = stages.finetune_stage(run, cfg, rt, on_epoch, force, resume)
    _show(out, report, cfg)
    return report


def _merge(run, out: Output, force: bool, threads: int | None = None) -> dict[str, Any]:
    from lora_cli.stages import pipeline as stages

    report = stages.merge_stage(run, force, threads)
    _show(out, report)
    return report


def _show(out: Output, report: dict[str, Any], cfg=None) -> None:
    """A stage's tables (`cfg` names the sizes of a training stage); a stage kept by --resume gets one line."""
    from lora_cli import tables

    stage = report["stage"]
    if report.get("kept"):
        out.note(f"{stage}: already complete, kept")
    elif stage == "merge":
        out.show(
            f"[bold]merge[/] -> {report['run_dir']}/merged.safetensors  ({report['seconds']:.2f} s)",
            tables.merge_table(report),
            tables.matrix_table(report["delta_corner"], "Δθ[:5, :5] = ΔWᵀ, blog layout (d_in x d_out)"),
        )
    else:
        what = "full-rank base" if stage == "pretrain" else f"rank-{report['rank']} adapter (alpha {report['alpha']:g})"
        out.show(
            f"[bold]{stage}[/]: {what}, full-data MSE  ({report['seconds']:.2f} s, {report['engine']} engine, {report['device']})",
            tables.loss_table(report["history"]),
            tables.parameter_table(report["parameters"], cfg.data.d_in, cfg.data.d_out),
        )
