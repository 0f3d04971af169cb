"""`lora sweep`: many adapters over one shared base, trained together, summarised in one table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lora_cli.commands.folders import resume_hint, runtime
from lora_cli.commands.options import SetOpt, collect_overrides, flag_option, runs_root, shared
from lora_cli.commands.output import Output
from lora_cli.errors import ConfigError

SweepDirOpt = Annotated[
    Optional[Path], typer.Option("--run-dir", "-r", metavar="DIR", help="Sweep folder to create; leave out for runs/<name>-sweep-<UTC time>.")
]
GridOpt = Annotated[
    Optional[list[str]],
    typer.Option("--grid", "-g", metavar="KEY=V1,V2", help="Sweep a config key over these values (an axis of the grid). Repeatable."),
]
ZipOpt = Annotated[
    Optional[list[str]],
    typer.Option("--zip", "-z", metavar="KEY=V1,V2", help="Keys that vary together: every --zip gives one key the same number of values (replaces the spec's zip:). Repeatable."),
]
SeedsOpt = Annotated[Optional[str], typer.Option("--seeds", metavar="S1,S2", help="Run every point with each of these seeds, one more axis (replaces the spec's seeds:).")]
PerSeedOpt = flag_option("--per-seed", "Show each seed's trial in the table (default: each point's mean ± std, min–max and n over its seeds).")
BaseOpt = Annotated[
    Optional[Path], typer.Option("--base", metavar="DIR", help="Use this run folder's pretrained base instead of pretraining (its hash is checked).")
]
ResumeDirOpt = Annotated[
    Optional[Path], typer.Option("--resume", metavar="DIR", help="Finish the sweep in DIR: only trials not complete run; its spec is kept.")
]
DryRunOpt = flag_option("--dry-run", "Print the trials, their groups, the memory and the expected time; train nothing.")
FailFastOpt = flag_option("--fail-fast", "Stop at the first failed trial (default: record it and go on).")
NoPlotOpt = flag_option("--no-plot", "Skip the figures (sweep_rank.png, sweep_curves.png, sweep_heatmap.png; lora plot draws them later).")


@shared("engine", "device", "threads", "log_to", "force", "report", "as_json")
def sweep(
    spec: Annotated[Optional[Path], typer.Argument(metavar="[SPEC]", help="A sweep spec (configs/sweeps/*.yaml), or a pipeline config to sweep with --grid.")] = None,
    grid: GridOpt = None,
    zips: ZipOpt = None,
    seeds: SeedsOpt = None,
    sets: SetOpt = None,
    run_dir: SweepDirOpt = None,
    base: BaseOpt = None,
    resume: ResumeDirOpt = None,
    dry_run: DryRunOpt = False,
    fail_fast: FailFastOpt = False,
    no_plot: NoPlotOpt = False,
    per_seed: PerSeedOpt = False,
    *,
    opts: Any,
) -> None:
    """Train a grid of adapters over one shared base; results.csv, figures and a table sorted by gap.

    Trials that share the data, the shift and the batch order train together on the batched
    engine (--engine auto); DoRA, PiSSA and OLoRA trials run one by one.

    Example: lora sweep configs/sweeps/rank-vs-shift-rank.yaml
    Example: lora sweep configs/smoke.yaml --grid adapter.rank=1,2,4 --grid adapter.scaling=standard,rslora
    Example: lora sweep configs/smoke.yaml --grid adapter.rank=1,2 --zip adapter.alpha=1,8 --zip adapter.scaling=standard,rslora --seeds 0,1,2
    Example: lora sweep --resume runs/rank-vs-shift-rank-sweep-20261125T120000Z
    """
    from lora_cli.runtime import distributed
    from lora_cli.stages import sweep as stages

    rt = runtime(opts.engine, opts.device, opts.threads, opts.log_to)
    with distributed.session(rt.device) as world:
        out, rt = Output(opts.as_json, quiet=not world.main), dataclasses.replace(rt, world=world)
        if not world.main:  # a follower: rank 0 makes or opens the sweep folder and says where
            path = distributed.broadcast(None, world)
            if path:
                folder, sw = stages.open_shared(Path(path))
                _use_threads(sw, rt.threads)
                stages.run_sweep(folder, sw, rt, out.progress, base, fail_fast, out.note)
            return
        axes = (grid, zips, seeds)
        sw, folder = _sweep_and_folder(spec, axes, sets, run_dir, base, resume, dry_run, no_plot, opts.force, rt, out)
        distributed.broadcast(str(folder.path) if folder else "", world)
        if folder is None:
            return
        _use_threads(sw, rt.threads)
        with resume_hint(f"lora sweep --resume {folder.path}"), out.overall("trials done", len(sw.trials)) as trials_done:
            rows = stages.run_sweep(folder, sw, rt, out.progress, base, fail_fast, out.note, trials_done)
    _show_results(out, folder, sw, rows, no_plot, per_seed, opts.report, rt.log_to)


def _show_results(out: Output, folder: Any, sw: Any, rows: list[dict[str, Any]], no_plot: bool, per_seed: bool, report: bool,
                  log_to: tuple[str, ...] = ()) -> None:
    """The table (seeds averaged unless `per_seed`), the figures, the JSON; exit non-zero when no trial completed."""
    from lora_cli.show import sweep_tables
    from lora_cli.stages.sweep_results import SEED, by_seed, unrepaired

    averaged = by_seed(rows, sw.axes) if SEED in sw.axes else None
    out.show(sweep_tables.summary_table(rows, sw.axes, None if per_seed else averaged, sw.plot))
    result = {"sweep_dir": str(folder.path), "axes": list(sw.axes), "trials": rows, **({"seeds": averaged} if averaged else {})}
    if not no_plot and any(row["status"] == "complete" for row in rows):
        from lora_cli.commands.folders import write_plots

        result["figures"] = write_plots(folder, out)
    if report:
        from lora_cli.commands.folders import write_report

        result["report"] = write_report(folder, out, log_to)
    out.emit(result)
    _check_outcome(rows, unrepaired(rows, folder), folder.path)
    failed = sum(row["status"] == "failed" for row in rows)
    out.note(f"{len(rows) - failed} of {len(rows)} trials complete; results in {folder.path}/results.csv")


def _check_outcome(rows: list[dict[str, Any]], unrepaired: list[str], folder: Path) -> None:
    """Exit non-zero when no trial completed, or when a damaged trial could not be repaired."""
    from lora_cli.errors import RunError

    failed = [row for row in rows if row["status"] == "failed"]
    if unrepaired:
        raise RunError(
            f"{len(unrepaired)} damaged trial{'s' * (len(unrepaired) > 1)} could not be repaired ({', '.join(unrepaired)}): "
            f"training again failed; their errors are in {folder}/results.csv"
        )
    if rows and not any(row["status"] == "complete" for row in rows):
        raise RunError(f"no trial completed: all {len(failed)} failed (first: {failed[0]['error'] if failed else 'unknown'}); see {folder}/results.csv")


def _sweep_and_folder(spec, axes, sets, run_dir, base, resume, dry_run, no_plot, force, rt, out) -> tuple[Any, Any]:
    """The sweep and its folder (made, or opened with --resume); no folder for --dry-run."""
    from lora_cli.config.sweep import load_sweep
    from lora_cli.stages import sweep as stages

    grid, zips, seeds = axes
    if resume is not None:
        if grid or zips or seeds or sets or run_dir or base:
            raise ConfigError("--resume finishes a sweep exactly as it was started; leave out --grid, --zip, --seeds, --set, --run-dir and --base")
        folder, sw = stages.open_sweep(resume, spec, out.note)
    elif spec is None:
        raise ConfigError("give a sweep spec or a config to sweep with --grid, e.g. lora sweep configs/sweeps/rank-vs-shift-rank.yaml")
    else:
        sw = load_sweep(spec, [_axis(text) for text in grid or []], collect_overrides(sets, {}), zip_points=_zip(zips), seeds=_seeds(seeds))
    from lora_cli.commands.folders import warn_unshifted

    warn_unshifted(out, {t.id: t.config for t in sw.trials})
    plan = _plan(sw, rt.engine, rt.world.size if rt.world else 1)
    memory = _memory_problem(plan)
    if dry_run:
        _show_plan(out, sw, plan, not no_plot)
        if memory:
            out.note(f"Warning: {memory}; as it is, lora sweep would refuse it")
        return sw, None
    if memory:
        from lora_cli.runtime.resources import ResourceError

        raise ResourceError(memory)
    if base is None:  # every process pretrains the base together
        from lora_cli.train.engines import require_parallel

        require_parallel(rt.engine, None, rt.world)
    if resume is None:
        folder = stages.create_sweep(sw, run_dir, runs_root(), force)
        out.note(f"Sweep folder: {folder.path}")
    return sw, folder


def _axis(text: str, flag: str = "--grid") -> tuple[str, list[Any]]:
    from lora_cli.config.overrides import parse_scalar

    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ConfigError(f"{flag} {text!r}: expected KEY=V1,V2,…, e.g. {flag} adapter.rank=1,2,4")
    if any(not v.strip() for v in values.split(",")):
        raise ConfigError(f"{flag} {text!r}: a value between commas is empty; give KEY=V1,V2,…")
    return key.strip(), [parse_scalar(v.strip(), f"{flag} {key.strip()}") for v in values.split(",")]


def _zip(texts: list[str] | None) -> list[dict[str, Any]] | None:
    """--zip KEY=V1,V2 … as zip points: the i-th value of every key together."""
    if not texts:
        return None
    axes = [_axis(text, "--zip") for text in texts]
    lengths = {key: len(values) for key, values in axes}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{key} has {n}" for key, n in lengths.items())
        raise ConfigError(f"--zip: {counts} values; keys that vary together need the same number of values")
    return [{key: values[i] for key, values in axes} for i in range(len(axes[0][1]))]


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected whole numbers between commas, e.g. --seeds 0,1,2") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds are 0 or more")
    return seeds


def _plan(sw: Any, engine: str, processes: int) -> list[dict[str, Any]]:
    """The groups as run_sweep will train them; under torchrun, with the rank each goes to."""
    from lora_cli.recipes.sweep import plan
    from lora_cli.runtime.resources import group_estimate, size_text
    from lora_cli.stages.sweep import owners

    configs = [t.config for t in sw.trials]
    planned, groups = plan(configs, engine), []
    for group in planned:
        memory, seconds = group_estimate([configs[i] for i in group.trials], group.engine)
        trials = [sw.trials[i].id for i in group.trials]
        groups.append({"engine": group.engine, "trials": trials, "bytes": memory, "memory": size_text(memory), "seconds": seconds, "why": group.why})
    if processes > 1:
        for g, rank in zip(groups, owners(planned, configs, processes)):
            g["rank"] = rank
    return groups


def _show_plan(out: Output, sw: Any, plan: list[dict[str, Any]], figures: bool) -> None:
    from lora_cli.show import sweep_tables
    from lora_cli.recipes.sweep import pretrain_key
    from lora_cli.runtime.resources import FIGURES_S, START_S, base_estimate

    engines = {trial: g["engine"] for g in plan for trial in g["trials"]}
    out.show(sweep_tables.plan_table(list(sw.trials), sw.axes, engines), sweep_tables.groups_table(plan))
    bases = {pretrain_key(t.config): t.config for t in sw.trials}
    estimate = {
        "pretraining": sum(base_estimate(cfg) for cfg in bases.values()),
        "training": sum(g["seconds"] for g in plan),
        "other": START_S + (FIGURES_S if figures else 0.0),  # start-up, results, figures
    }
    out.emit({"name": sw.name, "axes": list(sw.axes), "trials": sw.grid(), "groups": plan, "bases": len(bases), "seconds": estimate})
    counted = f"{_count(len(sw.trials), 'trial')} in {_count(len(plan), 'group')} over {_count(len(bases), 'base')}"
    if any("rank" in g for g in plan):
        busiest = max(sum(g["seconds"] for g in plan if g["rank"] == r) for r in {g["rank"] for g in plan})
        counted += f", shared over the processes: ≈ {busiest:.0f} s of training on the busiest"
    parts = f"pretraining {estimate['pretraining']:.0f} s, training {estimate['training']:.0f} s, start-up and results {estimate['other']:.0f} s"
    out.note(f"Dry run: {counted}; ≈ {sum(estimate.values()):.0f} s in all ({parts}; an estimate, within 2x here); nothing was run")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _memory_problem(plan: list[dict[str, Any]]) -> str | None:
    """What is wrong when the largest group needs more than 90 % of the memory available."""
    from lora_cli.runtime.resources import available_bytes, size_text

    have = available_bytes()
    worst = max(plan, key=lambda g: g["bytes"])
    if have is None or worst["bytes"] <= 0.9 * have:
        return None
    return (
        f"a group of {len(worst['trials'])} trials needs about {worst['memory']} of memory but only {size_text(have)} is "
        "available; split the sweep (fewer values per axis) or lower data.n, data.d_in or data.d_out"
    )


def _use_threads(sw: Any, request: int | None) -> None:
    from lora_cli.runtime import threads
    from lora_cli.config.stages import ADAPTED
    from lora_cli.runtime.resources import step_work

    work = sum(step_work(t.config, ADAPTED) for t in sw.trials)
    threads.use(threads.choose(work, request))
