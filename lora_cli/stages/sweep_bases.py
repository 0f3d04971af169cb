"""A sweep's frozen bases: a given run folder's (--base, its hash and pretraining checked), or
bases/base-<n> in the sweep folder, one per pretraining config, pretrained when missing or
found damaged (under torchrun by every rank together, written by rank 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.runtime import distributed
from lora_cli.errors import ConfigError
from lora_cli.recipes import sweep as plan
from lora_cli.stages import integrity, kinds
from lora_cli.stages.pipeline import load_base, pretrain_stage
from lora_cli.store.files import remove_tree
from lora_cli.store.run_folder import RunFolder


def base(run, sweep, cfg, runtime, base_dir, cache, progress, note) -> tuple[Any, RunFolder]:
    """The frozen base for `cfg`'s pretraining config: from --base, from bases/, or pretrained now."""
    key = plan.pretrain_key(cfg)
    if key not in cache:
        cache[key] = _given_base(base_dir, cfg) if base_dir else _own_base(run, sweep, cfg, runtime, progress, note)
    return cache[key]


def _given_base(base_dir: Path, cfg) -> tuple[Any, RunFolder]:
    folder = kinds.open_run(base_dir, lock="shared", expect="pipeline")
    folder.require_complete("pretrain", f"run `lora pretrain --run-dir {folder.path}` first")
    theirs = kinds.run_config(folder)
    if plan.pretrain_key(theirs) != plan.pretrain_key(cfg):
        raise ConfigError(
            f"--base {base_dir}: was pretrained with other data, seed or pretrain settings than this sweep's trials; "
            "leave out --base to pretrain here, or sweep only adapter.*, shift.* and finetune.* keys"
        )
    return load_base(folder, theirs), folder


def _own_base(run, sweep, cfg, runtime, progress, note) -> tuple[Any, RunFolder]:
    """bases/base-<n>, pretrained now unless complete; under torchrun every rank trains it
    data-parallel and rank 0 writes it."""
    world = runtime.world or distributed.World()
    rel = base_folder(sweep, cfg)
    needed = None
    if world.main:  # decides for every rank: they pretrain it together
        damage = integrity.base_problem(run.path / rel)
        if damage:
            note(f"{damage}; pretraining {rel} again")
        needed = bool(damage) or kinds.stage_status(run.path / rel, "pretrain") != "complete"
    if distributed.broadcast(needed, world):
        if world.main:
            folder = fresh_child(run, rel, cfg)
            with progress(f"pretraining the base ({rel})", cfg.pretrain.epochs) as on_epoch:
                pretrain_stage(folder, cfg, runtime, on_epoch)
            users = sum(plan.pretrain_key(t.config) == plan.pretrain_key(cfg) for t in sweep.trials)
            note(f"Pretrained the base for {users} trials: {folder.path}")
        else:
            from lora_cli.stages.follower import train_base

            train_base(cfg, runtime)
        distributed.barrier(world)  # the others read what rank 0 wrote
    folder = kinds.open_run(run.path / rel, lock=None)
    return load_base(folder, cfg), folder


def base_folder(sweep, cfg) -> str:
    """bases/base-<n>: where the sweep keeps the base of `cfg`'s pretraining config."""
    keys = list(dict.fromkeys(plan.pretrain_key(t.config) for t in sweep.trials))
    return f"bases/base-{keys.index(plan.pretrain_key(cfg))}"


def fresh_child(run: RunFolder, rel: str, cfg, register: bool = True) -> RunFolder:
    """A new pipeline run folder at `rel` in the sweep folder, for `cfg` (a base or a trial)."""
    remove_tree(run.path / rel)
    header = {"kind": "pipeline", "name": cfg.name, "seed": cfg.seed, "versions": kinds.versions()}
    return run.create_child(rel, kinds.LAYOUTS["pipeline"], header, kinds.config_text(cfg), register)
