"""`lora pretrain`, `lora finetune`, `lora merge` and `lora run`: the blog pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lora_cli.commands.folders import (
    adapter_runtime, create_run, engine_flag, open_run, resume_hint, runtime, shared_work, show_record, warn_unshifted, write_plots, write_report,
)
from lora_cli.commands.options import (
    ConfigOpt,
    NewRunDirOpt,
    RunDirOpt,
    SeedOpt,
    SetOpt,
    adapter_flags,
    collect_overrides,
    number_option,
    shared,
    thread_count,
)
from lora_cli.commands.output import Output
from lora_cli.errors import ConfigError

EpochsOpt = number_option("--epochs", "Training epochs of this stage.")
BothEpochsOpt = number_option("--epochs", "Epochs of both training stages.")


@shared("engine", "device", "threads", "log_to", "force", "resume", "as_json")
def pretrain(
    config: ConfigOpt = None, run_dir: NewRunDirOpt = None, sets: SetOpt = None, epochs: EpochsOpt = None, seed: SeedOpt = None, *, opts: Any
) -> None:
    """Stage 1: pretrain a full-rank nn.Linear on y = X·θ into a new run folder.

    Example: lora pretrain -c configs/smoke.yaml --epochs 10
    """
    overrides = collect_overrides(sets, {"--epochs": (("pretrain.epochs",), epochs), "--seed": (("seed",), seed)})
    with shared_work(runtime(opts.engine, opts.device, opts.threads, opts.log_to), opts.as_json) as (rt, out, lead):
        if lead is None:
            return
        from lora_cli.config.loading import load_config
        from lora_cli.stages import kinds, pipeline as stages
        from lora_cli.train.engines import require_parallel

        require_parallel(rt.engine, None, rt.world)
        if opts.resume:
            _no_changes_on_resume(config is not None or bool(overrides))
            run = open_run(run_dir, out)
            cfg = kinds.run_config(run)
        else:
            cfg = load_config(config, overrides)
            run = create_run(cfg, run_dir, opts.force, out, ("pretrain",))
        lead(run, cfg, ("pretrain",), ("pretrain",) if opts.resume else ())
        with resume_hint(f"lora pretrain --resume --run-dir {run.path}{engine_flag(rt)}"):
            with out.progress("pretrain", cfg.pretrain.epochs) as on_epoch:
                record = stages.pretrain_stage(run, cfg, rt, on_epoch, opts.resume, out.status)
    show_record(out, record, (cfg.data.d_in, cfg.data.d_out))
    out.emit(record.to_json())
    out.note(f"Next: lora finetune --rank {cfg.adapter.rank} --run-dir {run.path}")


@shared("rank", "alpha", "init", "rslora", "lr_ratio", "method", "dora", "engine", "device", "threads", "log_to", "force", "resume", "as_json")
def finetune(run_dir: RunDirOpt = None, sets: SetOpt = None, epochs: EpochsOpt = None, *, opts: Any) -> None:
    """Stage 2: shift θ, draw new data and train a rank-r adapter on the frozen base.

    Example: lora finetune --rank 4 --alpha 8 --init pissa --rslora
    Example: lora finetune --rank 2 --dora --lr-ratio 16
    Example: lora finetune --method lora_fa --rank 4
    Example: lora finetune --method vera --rank 16
    Example: lora finetune --init lora_one --set finetune.optimizer=adamw --set finetune.schedule=cosine
    Example: lora finetune --method full
    """
    flags = {**adapter_flags(opts), "--epochs": (("finetune.epochs",), epochs)}
    overrides = collect_overrides(sets, flags)
    from lora_cli.config.loading import check_values

    check_values(overrides)  # a bad value is a usage error, whatever the run folder holds
    if opts.resume:
        _no_changes_on_resume(bool(overrides))
    out, rt = Output(opts.as_json), runtime(opts.engine, opts.device, opts.threads, opts.log_to)
    run = open_run(run_dir, out)
    with resume_hint(f"lora finetune --resume --run-dir {run.path}{engine_flag(rt)}"):
        from lora_cli.stages import pipeline as stages

        cfg = stages.finetune_config(run, overrides)
        warn_unshifted(out, {"": cfg})
        rt = adapter_runtime(rt, cfg, out)
        with out.progress("finetune", cfg.finetune.epochs) as on_epoch:
            record = stages.finetune_stage(run, cfg, rt, on_epoch, opts.force, opts.resume, out.status)
    show_record(out, record, (cfg.data.d_in, cfg.data.d_out))
    out.emit(record.to_json())
    out.note(f"Next: lora merge --run-dir {run.path}")


AdapterDirOpt = Annotated[
    Optional[Path],
    typer.Option("--adapter", metavar="DIR", help="Merge this PEFT adapter folder (save_pretrained of a LoRA on one linear layer) instead of the run's own."),
]


@shared("threads", "force", "as_json")
def merge(run_dir: RunDirOpt = None, adapter: AdapterDirOpt = None, *, opts: Any) -> None:
    """Stage 3: merge W' = W + scaling·B·A, save it, and check it against the adapter.

    Example: lora merge --run-dir runs/posit-20261125T120000Z
    Example: lora merge --adapter my_peft_adapter/ --force   (an adapter PEFT saved, onto this run's base)
    """
    out = Output(opts.as_json)
    request = thread_count(opts.threads)
    run = open_run(run_dir, out)
    again = f"lora merge --run-dir {run.path}{f' --adapter {adapter}' if adapter else ''}{' --force' if opts.force else ''}"
    with resume_hint(f"run `{again}` again"):
        from lora_cli.stages import pipeline as stages

        record = stages.merge_stage(run, opts.force, request, adapter)
    from lora_cli.stages.imported import OWN_MODULE

    source = record.adapter_source
    if source and source.get("module") != OWN_MODULE:
        out.note(
            f"{adapter}: its tensors adapt {source.get('module') or 'an unnamed module'} (target_modules {source.get('target_modules')}); "
            "merged onto this run's one linear layer, whose shape they fit"
        )
    show_record(out, record)
    out.emit(record.to_json())


@shared("rank", "alpha", "init", "rslora", "lr_ratio", "method", "dora", "engine", "device", "threads", "log_to", "force", "resume", "plot", "report", "as_json")
def run(
    config: Annotated[Optional[Path], typer.Argument(metavar="[CONFIG]", help="YAML config, e.g. configs/posit.yaml (with --resume: the run folder's own).")] = None,
    run_dir: NewRunDirOpt = None,
    sets: SetOpt = None,
    epochs: BothEpochsOpt = None,
    seed: SeedOpt = None,
    *,
    opts: Any,
) -> None:
    """All three stages (pretrain, finetune, merge) into one fresh run folder.

    With --resume, finish a run instead, as its folder's config.yaml says: complete stages are
    checked against their hashes and kept, a damaged one runs again, an interrupted one
    continues from its checkpoint, the rest run.

    Example: lora run configs/smoke.yaml --rank 2 --set shift.value=0.5 --plot
    Example: lora run --resume --run-dir runs/smoke-20261125T120000Z
    """
    flags = {
        **adapter_flags(opts),
        "--epochs": (("pretrain.epochs", "finetune.epochs"), epochs),
        "--seed": (("seed",), seed),
    }
    from lora_cli.config.loading import load_config
    from lora_cli.stages import integrity, kinds, pipeline as stages

    overrides = collect_overrides(sets, flags)
    if config is None and not opts.resume:
        raise ConfigError("give a CONFIG to run, e.g. lora run configs/posit.yaml, or finish a run with lora run --resume --run-dir DIR")
    if config is None and overrides:
        raise ConfigError("--resume without a CONFIG finishes the run as its config.yaml says; leave out --set and the config flags")
    cfg = load_config(config, overrides) if config is not None else None
    with shared_work(runtime(opts.engine, opts.device, opts.threads, opts.log_to), opts.as_json) as (rt, out, lead):
        if lead is None:
            return
        if opts.resume:
            folder = open_run(run_dir, out)
            cfg = _same_config(folder, cfg, config)
        adapter_runtime(rt, cfg, out)  # refuse an engine that cannot train the adapter before any work
        warn_unshifted(out, {"": cfg})
        if opts.resume:
            kept = integrity.kept_stages(folder, out.note)
        else:
            folder, kept = create_run(cfg, run_dir, opts.force, out), ()
        train = tuple(s for s in kinds.TRAINED if s not in kept)
        resume = stages.continued(folder, train) if opts.resume else ()
        lead(folder, cfg, train, resume)
        with resume_hint(f"lora run --resume --run-dir {folder.path}{engine_flag(rt)}"):
            show = lambda record: show_record(out, record, (cfg.data.d_in, cfg.data.d_out))  # noqa: E731
            records = stages.run_all(folder, cfg, rt, kept, resume, out.progress, show, out.status)
    result: dict[str, Any] = {"run_dir": str(folder.path), "stages": {name: r.to_json() for name, r in records.items()}}
    if opts.plot:
        result["figures"] = write_plots(folder, out)
    if opts.report:
        result["report"] = write_report(folder, out, rt.log_to)
    out.emit(result)
    out.note(f"All stages complete in {folder.path}; list runs with: lora runs")


def _same_config(folder: Any, cfg: Any, config: Path | None) -> Any:
    """The run's own config; `cfg` (from CONFIG and flags), when given, must equal it."""
    from lora_cli.stages import kinds

    own = kinds.run_config(folder)
    if cfg is not None and own != cfg:
        raise ConfigError(
            f"{config}: differs from {folder.path}/config.yaml (with the flags given); leave out CONFIG to resume "
            f"with the run's own config: lora run --resume --run-dir {folder.path}"
        )
    return own


def _no_changes_on_resume(changed: bool) -> None:
    if changed:
        raise ConfigError("--resume continues a run exactly as configured; leave out -c, --set and the other config flags")
