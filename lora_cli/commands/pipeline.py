"""`lora pretrain`, `lora finetune`, `lora merge` and `lora run`: the blog pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
    ThreadsOpt,
    collect_overrides,
    number_option,
    runs_root,
    thread_count,
)
from lora_cli.commands.output import Output
from lora_cli.config.loading import ApproxConfig, Config, check_values, load_config
from lora_cli.errors import ConfigError, Interrupted, signal_name

EpochsOpt = number_option("--epochs", "Training epochs of this stage.")
BothEpochsOpt = number_option("--epochs", "Epochs of both training stages.")


def pretrain(
    config: ConfigOpt = None,
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = "fast",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 1: pretrain a full-rank nn.Linear on y = X·θ into a new run folder."""
    overrides = collect_overrides(sets, {"--epochs": (("pretrain.epochs",), epochs), "--seed": (("seed",), seed)})
    out = Output(as_json)
    runtime = _runtime(engine, device, threads)
    if resume:
        _no_changes_on_resume(config is not None or overrides)
        run = _open_run(run_dir, out)
        cfg = run.config()
    else:
        cfg = load_config(config, overrides)
        run = create_run(cfg, run_dir, force, out)
    with _resume_hint(f"lora pretrain --resume --run-dir {run.path}{_engine_flag(runtime)}"):
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
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: shift θ, draw new data and train a rank-r adapter on the frozen base."""
    flags = {"--rank": (("finetune.rank",), rank), "--alpha": (("finetune.alpha",), alpha), "--epochs": (("finetune.epochs",), epochs)}
    overrides = collect_overrides(sets, flags)
    check_values(overrides)  # a bad value is a usage error, whatever the run folder holds
    if resume:
        _no_changes_on_resume(bool(overrides))
    runtime = _runtime(engine, device, threads)
    out = Output(as_json)
    run = _open_run(run_dir, out)
    with _resume_hint(f"lora finetune --resume --run-dir {run.path}{_engine_flag(runtime)}"):
        report = _finetune(run, overrides, out, force, runtime, resume)
    out.emit(report)
    out.note(f"Next: lora merge --run-dir {run.path}")


def merge(run_dir: RunDirOpt = None, threads: ThreadsOpt = None, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """Stage 3: merge W' = W + scaling·B·A, save it, and check it against the adapter."""
    out = Output(as_json)
    request = thread_count(threads)
    run = _open_run(run_dir, out)
    with _resume_hint(f"run `lora merge --run-dir {run.path}` again"):
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
    engine: EngineOpt = "fast",
    device: DeviceOpt = "auto",
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
        "--rank": (("finetune.rank",), rank),
        "--alpha": (("finetune.alpha",), alpha),
        "--epochs": (("pretrain.epochs", "finetune.epochs"), epochs),
        "--seed": (("seed",), seed),
    }
    cfg = load_config(config, collect_overrides(sets, flags))
    runtime = _runtime(engine, device, threads)
    out = Output(as_json)
    if resume:
        folder = _open_run(run_dir, out)
        if folder.config() != cfg:
            raise ConfigError(f"{config}: differs from {folder.path}/config.yaml; resume with the run's own config, or start a new run")
    else:
        folder = create_run(cfg, run_dir, force, out)
    with _resume_hint(f"lora run {config} --resume --run-dir {folder.path}{_engine_flag(runtime)}"):
        reports = _all_stages(folder, cfg, out, runtime, resume)
    result = {"run_dir": str(folder.path), "stages": reports}
    if plot:
        from lora_cli.commands.plot import write_plots

        result["figures"] = write_plots(folder, out)
    out.emit(result)
    out.note(f"All stages complete in {folder.path}; list runs with: lora runs")


# ---- shared steps ----------------------------------------------------------


def _all_stages(folder, cfg: Config, out: Output, runtime: dict[str, Any], resume: bool) -> dict[str, Any]:
    """pretrain, finetune, merge in turn; with `resume`, complete stages are kept as they are."""
    steps = {
        "pretrain": lambda: _pretrain(folder, cfg, out, runtime, resume),
        "finetune": lambda: _finetune(folder, [], out, False, runtime, resume),
        "merge": lambda: _merge(folder, out, False, runtime["threads"]),
    }
    reports = {}
    for stage, step in steps.items():
        if resume and folder.stage(stage).get("status") == "complete":
            out.note(f"{stage}: already complete, kept")
            reports[stage] = {"stage": stage, "run_dir": str(folder.path), **folder.stage(stage)}
        else:
            reports[stage] = step()
    return reports


@contextmanager
def _resume_hint(hint: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block: one line that says where it stopped and how to go on."""
    try:
        yield
    except Interrupted as exc:
        raise exc.with_hint(_continue(hint)) from None
    except KeyboardInterrupt as exc:  # between stages: nothing was half done
        raise Interrupted(f"interrupted by {signal_name(exc)}", signal_name(exc), _continue(hint)) from None


def _continue(hint: str) -> str:
    return hint if hint.startswith("run ") else f"continue with `{hint}`"


def _engine_flag(runtime: dict[str, Any]) -> str:
    return "" if runtime["engine"] == "fast" else f" --engine {runtime['engine']}"


def create_run(cfg: Any, run_dir: Path | None, force: bool, out: Output):
    """A fresh run folder, made only once the config is known to fit in memory."""
    from lora_cli.resources import check_memory
    from lora_cli.store.run_folder import RunFolder

    for stage in ("approx",) if isinstance(cfg, ApproxConfig) else ("pretrain", "finetune", "merge"):
        check_memory(cfg, stage)

    run = RunFolder.create(cfg, run_dir, runs_root(), force)
    out.note(f"Run folder: {run.path}")
    return run


def _open_run(run_dir: Path | None, out: Output):
    """The pipeline run in --run-dir, else the newest one, locked for writing."""
    from lora_cli.store.run_index import open_newest
    from lora_cli.store.run_folder import RunFolder

    if run_dir is not None:
        return RunFolder.open(run_dir)
    run = open_newest(runs_root(), "pipeline")
    out.note(f"Using the newest pipeline run folder: {run.path} (choose another with --run-dir)")
    return run


def _runtime(engine: str, device: str, threads: str | None) -> dict[str, Any]:
    """Check --engine, --device and --threads before any folder is made; torch is imported only here."""
    request = thread_count(threads)
    from lora_cli.recipes.pipeline import ENGINES, resolve_device

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: must be one of {', '.join(ENGINES)}")
    return {"engine": engine, "device": str(resolve_device(device)), "threads": request}


def _no_changes_on_resume(changed: bool) -> None:
    if changed:
        raise ConfigError("--resume continues a run exactly as configured; leave out -c, --set and the other config flags")


def _pretrain(run, cfg: Config, out: Output, runtime: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    from lora_cli.stages import pipeline as stages

    with out.progress("pretrain", cfg.pretrain.epochs) as on_epoch:
        report = stages.pretrain_stage(run, cfg, on_epoch, resume=resume, **runtime)
    _show_training(out, report, cfg)
    return report


def _finetune(run, overrides, out: Output, force: bool, runtime: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    from lora_cli.stages import pipeline as stages

    cfg = stages.finetune_config(run, overrides)
    with out.progress("finetune", cfg.finetune.epochs) as on_epoch:
        report = stages.finetune_stage(run, cfg, on_epoch, force, resume=resume, **runtime)
    _show_training(out, report, cfg)
    return report


def _merge(run, out: Output, force: bool, threads: int | None = None) -> dict[str, Any]:
    from lora_cli import tables
    from lora_cli.stages import pipeline as stages

    report = stages.merge_stage(run, force, threads)
    out.show(
        f"[bold]merge[/] -> {run.path / 'merged.safetensors'}  ({report['seconds']:.2f} s)",
        tables.merge_table(report),
        tables.matrix_table(report["delta_corner"], "Δθ[:5, :5] = ΔWᵀ, blog layout (d_in x d_out)"),
    )
    return report


def _show_training(out: Output, report: dict[str, Any], cfg: Config) -> None:
    from lora_cli import tables

    stage = report["stage"]
    what = "full-rank base" if stage == "pretrain" else f"rank-{report['rank']} adapter (alpha {report['alpha']:g})"
    where = f"{report['engine']} engine, {report['device']}"
    out.show(
        f"[bold]{stage}[/]: {what}, full-data MSE  ({report['seconds']:.2f} s, {where})",
        tables.loss_table(report["history"]),
        tables.parameter_table(report["parameters"], cfg.data.d_in, cfg.data.d_out),
    )
