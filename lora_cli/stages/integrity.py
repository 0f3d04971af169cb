"""What resume keeps, it checks first: a stage recorded complete is kept only when its files
are present with the SHA-256 recorded, its tensors finite, its metrics rows the ones it
recorded and its record of the right shape. Anything else runs again from its inputs, with
one line saying why. The cost is hashing and reading what is kept, never training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_cli.errors import DamageError, RunError
from lora_cli.stages import kinds, results
from lora_cli.store.run_folder import RunFolder

PIPELINE = kinds.PIPELINE
Note = Callable[[str], None]


def kept_stages(run: RunFolder, note: Note) -> tuple[str, ...]:
    """What `lora run --resume` keeps: the leading stages recorded complete and intact. The
    first damaged one, and every stage after it, run again from their inputs (which the kept
    stages are); `note` hears why in one line."""
    dropped = run.drop_unreadable_metrics()  # lines no stage recorded: nothing depends on them
    if dropped:
        note(f"{run.path / 'metrics.jsonl'}: dropped {dropped} unreadable line{'s' * (dropped > 1)}")
    kept: list[str] = []
    for stage in PIPELINE:
        if run.stage(stage).get("status") != "complete":
            break
        problem = results.problem(run, stage)
        if problem:
            later = PIPELINE[PIPELINE.index(stage) + 1 :]
            note(f"{problem}; running {stage} again{' (then ' + ', '.join(later) + ')' if later else ''}")
            break
        kept.append(stage)
    return tuple(kept)


def trial_problem(path: Path, config: Any) -> str | None:
    """Why a sweep trial folder recorded complete cannot be kept (its manifest, config, base,
    adapter, shift, metrics or records), or None when it is intact."""
    try:
        folder = kinds.open_run(path, lock=None)
        if kinds.run_config(folder) != config:
            return f"{path / kinds.CONFIG}: is not this trial's config (edited?)"
    except RunError as exc:
        return _problem(exc)
    folder.drop_unreadable_metrics()  # lines no stage recorded: nothing depends on them
    for stage in kinds.TRAINED:
        problem = results.problem(folder, stage)
        if problem:
            return problem
    if folder.stage("finetune").get("base_sha256") != folder.manifest()["files"].get(kinds.BASE, {}).get("sha256"):
        return f"{path / kinds.BASE}: is not the base its adapter was trained on"
    return None


def base_problem(path: Path) -> str | None:
    """Why a sweep's pretrained base folder cannot be kept, or None (also None when there is no
    complete base there: the sweep pretrains it)."""
    if not path.exists():  # not pretrained yet: nothing is damaged
        return None
    try:
        folder = kinds.open_run(path, lock=None)
    except RunError as exc:
        return _problem(exc)
    if folder.stage("pretrain").get("status") != "complete":
        return None
    folder.drop_unreadable_metrics()
    return results.problem(folder, "pretrain")


def _problem(exc: RunError) -> str:
    return exc.problem if isinstance(exc, DamageError) else str(exc)
