"""A sweep against its folder: the spec and grid, a base per pretraining config, one pipeline
run folder per trial, each trial's status, and the results files.

    <sweep>/
        config.yaml     the spec, self-contained (its base config embedded): lora sweep it again
        grid.json       the expanded trials: id, axis values, whole config
        manifest.json   kind sweep; stages.sweep; trials.<id>.status: pending, running, complete,
                        failed (with the error) or interrupted; children
        bases/<id>/     a pipeline run folder per pretraining config (pretrain only)
        trials/<id>/    a pipeline run folder per trial (base, PEFT adapter, shift, records)
        results.csv, results.jsonl    one row per trial; curves.csv every logged metric; seeds.csv
                        with a seed axis (stages/sweep_results.py)

Every trial folder is written under the sweep's lock. On --resume a trial counts as done only
when its own manifest says finetune complete; any other trial folder is started over.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lora_cli.measure import trackers
from lora_cli.runtime import distributed
from lora_cli.config.stages import BASE_STAGE, ADAPTED
from lora_cli.config.sweep import Sweep, Trial, load_sweep
from lora_cli.config.yamlio import dump_yaml
from lora_cli.errors import ConfigError, DivergenceError, Interrupted, RunError, signal_name
from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline as recipe
from lora_cli.recipes import sweep as plan
from lora_cli.runtime.resources import group_estimate
from lora_cli.stages import integrity, kinds, sweep_bases
from lora_cli.stages.common import stream
from lora_cli.stages.pipeline import record_finetune
from lora_cli.stages.recording import mark_failed, recording
from lora_cli.stages.sweep_results import sweep_counts, write_results
from lora_cli.store.files import utc_now
from lora_cli.store.run_folder import CONFIG, RunFolder
from lora_cli.train.engines import Runtime

GRID = "grid.json"
STAGE = "sweep"
_HEADER = "# A lora sweep, self-contained (its base config embedded); run it again with: lora sweep <this file>\n"
Progress = Callable[[str, int], Any]  # (label, epochs) -> a context manager giving an epoch callback


def create_sweep(sweep: Sweep, run_dir: Path | None, root: Path, force: bool) -> RunFolder:
    """A fresh sweep folder holding the spec, the grid and every trial pending."""
    header = {"kind": STAGE, "name": f"{sweep.name}-sweep", "seed": sweep.base.seed, "versions": kinds.versions()}
    run = RunFolder.create(kinds.LAYOUTS[STAGE], header, dump_yaml(sweep.spec, _HEADER), run_dir, root, force)
    run.repair = kinds.repair_hint(STAGE, run.path)
    run.save_json(GRID, sweep.grid())
    run.update_entries("trials", {t.id: {"status": "pending", "values": t.values} for t in sweep.trials})
    return run


def open_sweep(path: Path, spec: Path | None, note: Callable[[str], None]) -> tuple[RunFolder, Sweep]:
    """A sweep folder to resume, and its sweep; `spec` (when given) must expand to the same grid.
    A missing or damaged grid.json (a sweep stopped as it started) is written again from the
    spec in config.yaml, which it only expands."""
    run = kinds.open_run(path, expect=STAGE)
    stored = load_sweep(run.path / CONFIG, stored=True)
    if spec is not None and load_sweep(spec).grid() != stored.grid():
        raise ConfigError(
            f"{spec}: expands to other trials than {run.path / GRID}; resume with the sweep's own spec "
            f"(lora sweep --resume {run.path}) or start a new sweep"
        )
    problem = run.file_problem(GRID)
    if problem:
        note(f"{problem}; written again from {run.path / CONFIG}")
        run.save_json(GRID, stored.grid())
    if run.load_json(GRID) != stored.grid():
        raise RunError(f"{run.path / GRID}: does not match its config.yaml; start a new sweep")
    return run, stored


def open_shared(path: Path) -> tuple[RunFolder, Sweep]:
    """The sweep folder rank 0 holds, for another rank under torchrun (no lock: rank 0 has it)."""
    run = kinds.open_for_follower(path)
    return run, load_sweep(run.path / CONFIG, stored=True)


def done_trials(run: RunFolder, sweep: Sweep, note: Callable[[str], None] | None = None) -> set[str]:
    """Trials whose own folder says finetune complete (the sweep's manifest may lag a kill),
    marked complete there, and every trial folder found registered as a child (a sharded
    sweep's other ranks write trial folders without touching the sweep's manifest).

    With `note` (a resume), each such trial is checked first (integrity.trial_problem): a
    damaged one is not done, `note` hears why, and its entry keeps the reason as `repair`."""
    done, found, damaged = set(), {}, {}
    for trial in sweep.trials:
        path = run.path / "trials" / trial.id
        status = kinds.stage_status(path, "finetune")
        if status is not None:
            found[f"trials/{trial.id}"] = _child_entry(trial)
        problem = integrity.trial_problem(path, trial.config) if note and status == "complete" else None
        if problem:
            note(f"trial {trial.id}: {problem}; training it again")
            damaged[trial.id] = {"status": "pending", "repair": problem}
        elif status == "complete":
            done.add(trial.id)
    run.update_entries("children", found)
    run.update_entries("trials", {t: {"status": "complete"} for t in done} | damaged)
    return done


def _child_entry(trial: Trial) -> dict[str, Any]:
    return {"kind": "pipeline", "name": trial.config.name}


def run_sweep(run: RunFolder, sweep: Sweep, runtime: Runtime, progress: Progress, base_dir: Path | None = None,
              fail_fast: bool = False, note: Callable[[str], None] = print,
              trials_done: Callable[[int], None] = lambda done: None) -> list[dict[str, Any]]:
    """Train every trial not yet complete, group by group, recording each; the results rows.
    `trials_done` hears how many trials are finished (complete or failed) after each group.
    Under torchrun every rank calls this with the same `run` (rank 0 made it): the groups are
    shared out by estimated cost, each rank writes only its own trials' folders, and rank 0
    waits for the others' trials on disk before writing the manifest and the results."""
    world = runtime.world or distributed.World()
    done = None
    if world.main:  # before the broadcast: start_stage sweeps the whole tree's temporaries, so no rank writes yet
        done = done_trials(run, sweep, note)
        run.start_stage(STAGE)  # also sweeps what a killed write left (results are rewritten after each group)
        run.update_stage(STAGE, trials=len(sweep.trials), processes=world.size)
    done = distributed.broadcast(done, world)
    trials_done(len(done))
    todo = [t for t in sweep.trials if t.id not in done]
    groups = plan.plan([t.config for t in todo], runtime.engine)
    owner = owners(groups, [t.config for t in todo], world.size)
    bases: dict[str, tuple[Any, RunFolder]] = {}
    with _ending(run, sweep, world):
        if base_dir is None:  # every base the sweep holds is checked first, and pretrained again when damaged
            for trial in sweep.trials:
                if (run.path / sweep_bases.base_folder(sweep, trial.config)).is_dir():
                    sweep_bases.base(run, sweep, trial.config, runtime, None, bases, progress, note)
        for number, group in enumerate(groups, 1):
            members = [todo[i] for i in group.trials]
            base = sweep_bases.base(run, sweep, members[0].config, runtime, base_dir, bases, progress, note)
            if owner[number - 1] != world.rank:
                continue
            label = f"group {number}/{len(groups)}: {len(members)} trial{'s' * (len(members) > 1)} on the {group.engine} engine"
            with progress(label, members[0].config.finetune.epochs) as on_epoch:
                failed = _run_group(run, group, members, base, runtime, on_epoch)
            finished = len(done) + sum(len(g.trials) for g, o in zip(groups[:number], owner) if o == world.rank)
            if world.main:
                write_results(run, sweep)
                trials_done(finished)
            note(f"{label}: {len(members) - len(failed)} complete, {len(failed)} failed ({finished} of {len(sweep.trials)} trials done)")
            if failed and fail_fast:
                raise RunError(f"trial {failed[0]} failed and --fail-fast stops the sweep; continue with `lora sweep --resume {run.path}`")
        if not world.main:
            return []
        _gather(run, sweep, [todo[i] for g, o in zip(groups, owner) if o != 0 for i in g.trials], trials_done)
    rows = write_results(run, sweep)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("complete", "failed")}
    run.update_stage(STAGE, status="complete", finished=utc_now(), **counts)
    if runtime.log_to:  # the sweep's own tracker run (MLflow's parent of the trials) ends
        trackers.finish(runtime.log_to, run, trackers.flat_params(sweep.spec), sweep_counts(run))
    return rows


def owners(groups: list[plan.Group], configs: list[Any], processes: int) -> list[int]:
    """The rank that trains each group: by estimated time, longest first onto the least-loaded
    rank (`lora sweep --dry-run` under torchrun shows the same)."""
    return distributed.shard([group_estimate([configs[i] for i in g.trials], g.engine)[1] for g in groups], processes)


def _gather(run: RunFolder, sweep: Sweep, others: list[Trial], trials_done: Callable[[int], None]) -> None:
    """Rank 0: wait until every trial the other ranks train has finished in its own folder (if a
    rank dies, torchrun stops this one too), then record their statuses and folders."""
    pending = {t.id: t for t in others}
    while pending:
        for trial_id in list(pending):
            record = kinds.stage_record(run.path / "trials" / trial_id, "finetune") or {}
            if record.get("status") in ("complete", "failed"):
                entry = {"status": record["status"], "finished": record.get("finished")}
                run.update_entries("trials", {trial_id: entry | ({"error": record.get("error")} if record["status"] == "failed" else {})})
                del pending[trial_id]
        if pending:
            time.sleep(0.2)
    run.update_entries("children", {f"trials/{t.id}": _child_entry(t) for t in others})
    trials_done(len(sweep.trials))


@contextmanager
def _ending(run: RunFolder, sweep: Sweep, world: distributed.World) -> Iterator[None]:
    """Rank 0 records how the sweep stage ends early: interrupted (Ctrl-C, SIGTERM, a stopped
    rank), or failed with the error (--fail-fast, a bad --base, …), then re-raises."""
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as exc:
        if not world.main:
            raise
        raise _interrupted(run, sweep, exc) from None
    except Exception as exc:
        if world.main:
            mark_failed(run, STAGE, exc)
        raise


def _interrupted(run: RunFolder, sweep: Sweep, exc: BaseException) -> Interrupted:
    name = exc.signal_name if isinstance(exc, Interrupted) else signal_name(exc)
    complete = len(done_trials(run, sweep))  # read from the trial folders: other ranks' trials too
    trials = run.manifest().get("trials", {})
    flying = [t for t, entry in trials.items() if entry.get("status") == "running"]
    run.update_entries("trials", {t: {"status": "interrupted"} for t in flying})
    run.update_stage(STAGE, status="interrupted", signal=name, finished=utc_now(), complete=complete)
    return Interrupted(f"sweep interrupted by {name}: {complete} of {len(sweep.trials)} trials complete, {len(flying)} in flight will run again", name)


def _trial_folder(run: RunFolder, trial: Trial, base: RunFolder, register: bool = True) -> RunFolder:
    """trials/<id>/ with the base's pretrain stage (record, metrics, base.safetensors linked) and finetune running."""
    child = sweep_bases.fresh_child(run, f"trials/{trial.id}", trial.config, register)
    child.adopt_file(kinds.BASE, base.path / kinds.BASE)
    child.update_stage(BASE_STAGE, **base.stage(BASE_STAGE), shared_from=str(base.path))
    child.set_metrics(BASE_STAGE, [row for row in base.metrics() if row.get("stage") == BASE_STAGE])
    child.start_stage(ADAPTED)
    return child


def _run_group(run: RunFolder, group: plan.Group, members: list[Trial], base: tuple[Any, RunFolder], runtime: Runtime, on_epoch) -> list[str]:
    """Train one group and record each trial; the ids of trials that failed."""
    weight, base_folder = base
    main = runtime.world is None or runtime.world.main
    record = run.update_entries if main else (lambda section, entries: None)  # rank 0 alone writes the sweep's manifest
    children = [_trial_folder(run, t, base_folder, main) for t in members]
    record("trials", {t.id: {"status": "running", "engine": group.engine, "started": utc_now()} for t in members})
    cfgs = [t.config for t in members]
    streams = [stream(child, ADAPTED, None, runtime.log_to, t.config) if main else None for child, t in zip(children, members)]
    start = time.perf_counter()
    if group.engine == plan.BATCHED:
        data = plan.problem(cfgs[0])  # θ, θ2, X2, y2 once for training, optima and diagnostics
        optima, analysed = [None] * len(cfgs), time.perf_counter()
        if any(c.finetune.optimum for c in cfgs):
            data.moments  # noqa: B018 -- computed once, before training: the engine's losses and every optimum read them
        analysis, start = time.perf_counter() - analysed, time.perf_counter()
        results = plan.finetune_group(cfgs, weight, runtime.device, on_epoch, data, streams)
        if any(c.finetune.optimum for c in cfgs):
            analysed = time.perf_counter()
            optima = plan.group_optima(cfgs, weight, data, [r.initial for r in results])
            each = (analysis + time.perf_counter() - analysed) / len(cfgs)  # the group's moments and optima, shared out
            optima = [dataclasses.replace(o, seconds=each) for o in optima]
        targets = plan.group_targets(cfgs[0], weight, data)
        shared = [(lambda o=o: o, lambda d, r, res=res, c=c: _diagnose(d, c, res, targets, r)) for o, res, c in zip(optima, results, cfgs)]
        engine = plan.BATCHED
    else:
        engine = group.engine
        results = [recipe.finetune(cfgs[0], weight, dataclasses.replace(runtime, engine=engine, world=None), on_epoch, on_log=streams[0])]
        shared = [(None, None)]
    seconds = (time.perf_counter() - start) / len(members)
    failed = []
    for trial, child, result, (optimum, diagnose), out in zip(members, children, results, shared, streams):
        fields = {"engine": engine, "device": runtime.device, "threads": None, "resumed_from_epoch": None}
        try:
            with recording(child, ADAPTED):
                record_finetune(child, trial.config, weight, result, seconds, fields, optimum, diagnose, out=out)
            record("trials", {trial.id: {"status": "complete", "finished": utc_now()}})
        except DivergenceError as exc:
            failed.append(trial.id)
            record("trials", {trial.id: {"status": "failed", "error": str(exc), "finished": utc_now()}})
    return failed


def _diagnose(delta, cfg, result, targets, rank: int):
    """The trial's subspace diagnostics against the group's shared targets (shift, target, base);
    ΔW's SVD from its factors."""
    from lora_cli.config.stages import ADAPTED
    from lora_cli.core.subspace import diagnose
    from lora_cli.methods.registry import method_of

    shift, target, base = targets
    method = method_of(result.spec)
    factors = method.factors(result.spec, result.adapter)
    return diagnose(delta, shift, target, rank, factors=factors, base=base, half=drawn.sigma_half(cfg, ADAPTED), full=method.full_rank)
