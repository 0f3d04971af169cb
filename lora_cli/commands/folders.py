"""Steps several commands share: make or find the run folder, resolve the runtime, word an
interruption, write figures. Commands import this module, never each other."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lora_cli.commands.options import runs_root, thread_count
from lora_cli.commands.output import Output
from lora_cli.errors import Interrupted, RunError, signal_name


def create_run(cfg: Any, run_dir: Path | None, force: bool, out: Output, stages: tuple[str, ...] | None = None):
    """A fresh run folder, made only once the config is known to fit in memory for `stages`
    (None: every stage of its kind)."""
    from lora_cli.runtime.resources import check_memory
    from lora_cli.stages.kinds import LAYOUTS, create_run as create, kind_of

    for stage in stages or LAYOUTS[kind_of(cfg)].stages:
        check_memory(cfg, stage)
    run = create(cfg, run_dir, runs_root(), force)
    out.note(f"Run folder: {run.path}")
    return run


def open_run(run_dir: Path | None, out: Output, kind: str | None = "pipeline", lock: str = "exclusive", how: str = "with --run-dir"):
    """The run in `run_dir`, else the newest one of `kind` (any, for None), saying which and
    `how` to choose another; locked as `lock` ("exclusive" to write, "shared" to read)."""
    from lora_cli.stages.kinds import open_newest, open_run as open_folder

    if run_dir is not None:
        return open_folder(run_dir, lock=lock, expect=kind)
    run = open_newest(runs_root(), kind, lock=lock)
    out.note(f"Using the newest {kind + ' ' if kind else ''}run folder: {run.path} (choose another {how})")
    return run


def runtime(engine: Any, device: Any, threads: str | None, log_to: str | None = None):
    """--engine, --device, --threads and --log-to resolved once, before any folder is made (imports torch)."""
    request = thread_count(threads)
    from lora_cli.measure.trackers import parse
    from lora_cli.train.engines import resolve_runtime

    trackers = parse(log_to)
    rt = resolve_runtime(getattr(engine, "value", engine), getattr(device, "value", device), request)
    return dataclasses.replace(rt, log_to=trackers)


def adapter_runtime(rt: Any, cfg: Any, out: Output):
    """`rt` with its engine chosen for the config's adapter: --engine auto picks the first
    engine that can train it, saying so when that is not the usual one; a named engine that
    cannot is refused with one line, and so is one that cannot share its work under torchrun."""
    from lora_cli.train.engines import require_parallel

    name, why = require_parallel(rt.engine, cfg.adapter.method, rt.world)
    if why:
        out.note(why)
    return dataclasses.replace(rt, engine=name)


def warn_unshifted(out: Output, configs: dict[str, Any]) -> None:
    """A note for each shift among `configs` (named by key: '' for a run, a trial's id) that
    leaves θ unchanged: such a finetune has nothing to learn, which is rarely what was meant."""
    from lora_cli.core.shifts import unchanged

    still: dict[tuple[str, float], list[str]] = {}
    for name, cfg in configs.items():
        if unchanged(cfg.shift.kind, cfg.shift.value):
            still.setdefault((cfg.shift.kind, cfg.shift.value), []).append(name)
    for (kind, value), names in still.items():
        which = f"trial{'s' * (len(names) > 1)} {', '.join(names)}: " if names[0] else ""
        out.note(f"{which}shift.kind {kind} with shift.value {value:g} leaves θ unchanged (θ2 = θ): the adapter has nothing to learn")


def engine_flag(rt: Any) -> str:
    """The --engine flag a resume command must repeat ('' for the default)."""
    return "" if rt.engine == "auto" else f" --engine {rt.engine}"


@contextmanager
def resume_hint(hint: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block: one line that says where it stopped and how to go on.

    `hint` is a command (worded "continue with `…`") or a sentence starting "run ".
    """
    advice = hint if hint.startswith("run ") else f"continue with `{hint}`"
    try:
        yield
    except Interrupted as exc:
        raise exc.with_hint(advice) from None
    except KeyboardInterrupt as exc:  # between stages: nothing was half done
        raise Interrupted(f"interrupted by {signal_name(exc)}", signal_name(exc), advice) from None


def write_plots(run, out: Output, out_dir: Path | None = None) -> list[str]:
    """Write the run's figures and list them for the person; returns their paths as text."""
    from lora_cli.show.figures import plot_run

    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir}: exists and is not a folder; choose another --out")
    paths = [str(p) for p in plot_run(run, out_dir)]
    out.show("Figures:", *(f"  {p}" for p in paths))
    return paths


def write_report(run, out: Output, log_to: tuple[str, ...] = ()) -> str:
    """Write the folder's report.html (lora report) and say where; the trackers `log_to`
    that keep files get it too. Its path as text."""
    from lora_cli.measure.trackers import attach
    from lora_cli.show.report import write

    path = write([run])
    attach(log_to, run, path.name)
    out.note(f"Report: {path} (open it in a browser; it needs no network)")
    return str(path)


def show_record(out: Output, record: Any, shape: tuple[int, int] = (0, 0)) -> None:
    """A completed stage's tables (see tables.stage_tables); one note for a stage kept by --resume."""
    if record.kept:
        out.note(f"{record.stage}: already complete, kept")
        return
    from lora_cli.show import tables

    out.show(*tables.stage_tables(record, shape))


@contextmanager
def shared_work(rt: Any, as_json: bool) -> Iterator[tuple[Any, Output, Callable[..., None] | None]]:
    """The command's runtime and output, under torchrun too (see lora_cli.runtime.distributed).

    Rank 0 (and a lone process) gets `lead(run, cfg, train, resume)`, to call once its run
    folder is open: it tells the other ranks where, which stages to train and which of those
    continue from a checkpoint. The other ranks train
    as followers (stages/follower.py) inside this block, print nothing, and get None.
    """
    from lora_cli.runtime import distributed

    with distributed.session(rt.device) as world:
        rt = dataclasses.replace(rt, world=world)
        out = Output(as_json, quiet=not world.main)
        if world.main:

            def lead(run: Any, cfg: Any, train: tuple[str, ...], resume: tuple[str, ...]) -> None:
                if world.size > 1:
                    from lora_cli.stages.follower import plan_for

                    distributed.broadcast(plan_for(run, cfg, train, resume), world)

            yield rt, out, lead
        else:
            from lora_cli.stages.follower import follow

            follow(distributed.broadcast(None, world), rt)
            yield rt, out, None
