"""`lora pretrain`, `lora finetune`, `lora merge` and `lora run`: the blog pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lora_cli.commands.options import (
    AlphaOpt,
    ConfigOpt,
    DeviceOpt,
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
    collect_overrides,
    runs_root,
)
from lora_cli.commands.output import Output
from lora_cli.config import ApproxConfig, Config, load_config
from lora_cli.errors import ConfigError

EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Training epochs of this stage.")]


def pretrain(
    config: ConfigOpt = None,
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = "fast",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 1: pretrain a full-rank nn.Linear on y = X·θ into a new run folder."""
    overrides = collect_overrides(sets, {"--epochs": (("pretrain.epochs",), epochs), "--seed": (("seed",), seed)})
    out = Output(as_json)
    runtime = _runtime(engine, device)
    if resume:
        _no_changes_on_resume(config is not None or overrides)
        run = _open_run(run_dir, out)
        cfg = run.config()
    else:
        cfg = load_config(config, overrides)
        run = create_run(cfg, run_dir, force, out)
    report = _pretrain(run, cfg, out, runtime, resume)
    out.emit(report)
    out.note(f"Next: lora finetune --rank {cfg.finetune.rank} --run-dir {run.path}")


def finetune(
    run_dir: RunDirOpt = None,
    rank: RankOpt = None,
    alpha: AlphaOpt = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    engine: EngineOpt = "fast",
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: shift θ, draw new data and train a rank-r adapter on the frozen base."""
    flags = {"--rank": (("finetune.rank",), rank), "--alpha": (("finetune.alpha",), alpha), "--epochs": (("finetune.epochs",), epochs)}
    overrides = collect_overrides(sets, flags)
    if resume:
        _no_changes_on_resume(bool(overrides))
    runtime = _runtime(engine, device)
    out = Output(as_json)
    run = _open_run(run_dir, out)
    report = _finetune(run, overrides, out, force, runtime, resume)
    out.emit(report)
    out.note(f"Next: lora merge --run-dir {run.path}")


def merge(run_dir: RunDirOpt = None, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """Stage 3: merge W' = W + scaling·B·A, save it, and check it against the adapter."""
    out = Output(as_json)
    run = _open_run(run_dir, out)
    report = _merge(run, out, force)
    out.emit(report)


def run(
    config: Annotated[Path, typer.Argument(help="YAML config, e.g. configs/posit.yaml.")],
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    rank: RankOpt = None,
    alpha: AlphaOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs of both training stages.")] = None,
    seed: SeedOpt = None,
    engine: EngineOpt = "fast",
    device: DeviceOpt = "auto",
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
        "--rank": (("finetune.rank",), rank),
        "--alpha": (("finetune.alpha",), alpha),
        "--epochs": (("pretrain.epochs", "finetune.epochs"), epochs),
        "--seed": (("seed",), seed),
    }
    cfg = load_config(config, collect_overrides(sets, flags))
    runtime = _runtime(engine, device)
    out = Output(as_json)
    if resume:
        folder = _open_run(run_dir, out)
        if folder.config() != cfg:
            raise ConfigError(f"{config}: differs from {folder.path}/config.yaml; resume with the run's own config, or start a new run")
    else:
        folder = create_run(cfg, run_dir, force, out)
    steps = {
        "pretrain": lambda: _pretrain(folder, cfg, out, runtime, resume),
        "finetune": lambda: _finetune(folder, [], out, False, runtime, resume),
        "merge": lambda: _merge(folder, out, False),
    }
    reports = {}
    for stage, step in steps.items():
        if resume and folder.stage(stage).get("status") == "complete":
            out.note(f"{stage}: already complete, kept")
            reports[stage] = {"stage": stage, "run_dir": str(folder.path), **folder.stage(stage)}
        else:
            reports[stage] = step()
    result = {"run_dir": str(folder.path), "stages": reports}
    if plot:
        from lora_cli.commands.plot import write_plots

        result["figures"] = write_plots(folder, out)
    out.emit(result)
    out.note(f"All stages complete in {folder.path}; list runs with: lora runs")


# ---- shared steps ----------------------------------------------------------


def create_run(cfg: Any, run_dir: Path | None, force: bool, out: Output):
    """A fresh run folder, made only once the config is known to fit in memory."""
    from lora_cli.resources import check_memory
    from lora_cli.runs import RunFolder

    for stage in ("approx",) if isinstance(cfg, ApproxConfig) else ("pretrain", "finetune", "merge"):
        check_memory(cfg, stage)

    run = RunFolder.create(cfg, run_dir, runs_root(), force)
    out.note(f"Run folder: {run.path}")
    return run


def _open_run(run_dir: Path | None, out: Output):
    from lora_cli.runs import RunFolder

    if run_dir is not None:
        return RunFolder.open(run_dir)
    run = RunFolder.newest(runs_root())
    out.note(f"Using the newest run folder: {run.path} (choose another with --run-dir)")
    return run


def _runtime(engine: str, device: str) -> dict[str, str]:
    """Check --engine and --device before any folder is made; torch is imported only here."""
    from lora_cli.pipeline import ENGINES, resolve_device

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: must be one of {', '.join(ENGINES)}")
    return {"engine": engine, "device": str(resolve_device(device))}


def _no_changes_on_resume(changed: bool) -> None:
    if changed:
        raise ConfigError("--resume continues a run exactly as configured; leave out -c, --set and the other config flags")


def _pretrain(run, cfg: Config, out: Output, runtime: dict[str, str], resume: bool = False) -> dict[str, Any]:
    from lora_cli import stages

    with out.progress("pretrain", cfg.pretrain.epochs) as on_epoch:
        report = stages.pretrain_stage(run, cfg, on_epoch, resume=resume, **runtime)
    _show_training(out, report, cfg)
    return report


def _finetune(run, overrides, out: Output, force: bool, runtime: dict[str, str], resume: bool = False) -> dict[str, Any]:
    from lora_cli import stages

    cfg = stages.finetune_config(run, overrides)
    with out.progress("finetune", cfg.finetune.epochs) as on_epoch:
        report = stages.finetune_stage(run, cfg, on_epoch, force, resume=resume, **runtime)
    _show_training(out, report, cfg)
    return report


def _merge(run, out: Output, force: bool) -> dict[str, Any]:
    from lora_cli import report as tables
    from lora_cli import stages

    report = stages.merge_stage(run, force)
    out.show(
        f"[bold]merge[/] -> {run.path / 'merged.safetensors'}  ({report['seconds']:.2f} s)",
        tables.merge_table(report),
        tables.matrix_table(report["delta_corner"], "Δθ[:5, :5] = ΔWᵀ, blog layout (d_in x d_out)"),
    )
    return report


def _show_training(out: Output, report: dict[str, Any], cfg: Config) -> None:
    from lora_cli import report as tables

    stage = report["stage"]
    what = "full-rank base" if stage == "pretrain" else f"rank-{report['rank']} adapter (alpha {report['alpha']:g})"
    where = f"{report['engine']} engine, {report['device']}"
    out.show(
        f"[bold]{stage}[/]: {what}, full-data MSE  ({report['seconds']:.2f} s, {where})",
        tables.loss_table(report["history"]),
        tables.parameter_table(report["parameters"], cfg.data.d_in, cfg.data.d_out),
    )
