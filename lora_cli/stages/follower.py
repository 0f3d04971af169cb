"""Ranks other than 0 under torchrun: the same training as rank 0, on their share of each
batch, writing nothing.

Rank 0 opens or creates the run folder, then tells the others (`Plan`, broadcast once) where
it is, the config and which stages will train. Each follower trains those stages with the
same seeds and batch order, so every all-reduced step is the step rank 0 takes; rank 0 alone
records, checkpoints and prints. A follower resuming reads the checkpoint rank 0 reads
(the run folder must be on a filesystem every process sees).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lora_cli.config.loading import load_config
from lora_cli.config.stages import BASE_STAGE, STAGES, Stage
from lora_cli.recipes import pipeline as recipe
from lora_cli.stages.common import resume_state, use_threads
from lora_cli.stages.kinds import open_for_follower
from lora_cli.stages.pipeline import load_base
from lora_cli.store.run_folder import RunFolder
from lora_cli.train.engines import Runtime


@dataclasses.dataclass(frozen=True)
class Plan:
    """What rank 0 tells the followers: the run folder, its config and the stages to train."""

    path: str
    config: dict[str, Any]
    train: tuple[str, ...]
    resume: tuple[str, ...] = ()  # of `train`, those that continue from a checkpoint


def plan_for(run: RunFolder, cfg: Any, train: tuple[str, ...], resume: tuple[str, ...]) -> Plan:
    return Plan(str(run.path), cfg.to_dict(), train, resume)


def follow(plan: Plan, runtime: Runtime) -> None:
    """Train the plan's stages as a follower, each from what the one before it trained (a
    stage on the base it did not pretrain reads the base rank 0 stored)."""
    cfg = load_config(base=plan.config)
    run = open_for_follower(Path(plan.path))
    base = None
    for name in plan.train:
        stage = STAGES[name]
        if stage.on_base and base is None:
            base = load_base(run, cfg)
        result = _train(run, cfg, runtime, stage, base, name in plan.resume)
        base = base if stage.on_base else result.weight


def _train(run: RunFolder | None, cfg: Any, runtime: Runtime, stage: Stage, base: Any, resume: bool) -> Any:
    use_threads(cfg, stage.name, runtime.threads)
    runtime = runtime.resolved(stage.spec(cfg).method if stage.on_base else None)
    state = resume_state(run, stage.name, runtime.engine) if resume else None
    return recipe.train_stage(cfg, stage, base, runtime, resume=state)


def train_base(cfg: Any, runtime: Runtime) -> Any:
    """A follower's part of pretraining a sweep's base (rank 0 writes it); the weight."""
    return _train(None, cfg, runtime, STAGES[BASE_STAGE], None, False).weight
