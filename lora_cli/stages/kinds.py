"""The kinds of run folder: each kind's config schema, its stages in order and the files each
stage writes. The run store (lora_cli/store/) is generic; what a pipeline or an approx run is,
it learns here, as a `Layout` per kind.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_cli import __version__
from lora_cli.config.loading import config_to_yaml, load_config
from lora_cli.config.schemas import ApproxConfig, Config, Section
from lora_cli.config.sweep import SweepSpec
from lora_cli.errors import ConfigError, RunError
from lora_cli.store.run_folder import CONFIG, MANIFEST, Layout, RunFolder
from lora_cli.store.run_index import newest

BASE = "base.safetensors"  # key "weight" (d_out, d_in)
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"  # PEFT layout
ADAPTER_CONFIG = "adapter/adapter_config.json"
SHIFT = "shift.safetensors"  # key "true_delta": ΔW* = (θ2 − θ)ᵀ (d_out, d_in), for figures
MERGED = "merged.safetensors"  # key "weight" (d_out, d_in)
APPROX = "approx.safetensors"  # keys "target", "A", "B"
RESULTS_CSV = "results.csv"  # a sweep's trials, one row each
RESULTS_JSONL = "results.jsonl"


@dataclass(frozen=True)
class Kind:
    schema: type[Section]
    layout: Layout


KINDS: dict[str, Kind] = {
    "pipeline": Kind(
        Config,
        Layout(
            ("pretrain", "finetune", "merge"),
            {"pretrain": (BASE,), "finetune": (ADAPTER_WEIGHTS, ADAPTER_CONFIG, SHIFT), "merge": (MERGED,)},
        ),
    ),
    "approx": Kind(ApproxConfig, Layout(("approx",), {"approx": (APPROX,)})),
    # a sweep's trials and bases are run folders of their own, listed as its children
    "sweep": Kind(SweepSpec, Layout(("sweep",), {"sweep": (RESULTS_CSV, RESULTS_JSONL)})),
}
LAYOUTS = {name: kind.layout for name, kind in KINDS.items()}
_HEADER = "# Resolved config of this run; rerun it with: lora run <this file>\n"


def kind_of(cfg: Section) -> str:
    return next(name for name, kind in KINDS.items() if isinstance(cfg, kind.schema))


def create_run(cfg: Section, run_dir: Path | None, root: Path, force: bool = False) -> RunFolder:
    """A fresh run folder for `cfg` (see RunFolder.create), its config and manifest written."""
    kind = kind_of(cfg)
    header = {"kind": kind, "name": cfg.name, "seed": cfg.seed, "versions": versions()}
    return RunFolder.create(KINDS[kind].layout, header, config_text(cfg), run_dir, root, force)


def open_run(path: Path, lock: str | None = "exclusive") -> RunFolder:
    return RunFolder.open(path, LAYOUTS, lock)


def open_for_follower(path: Path) -> RunFolder:
    """The run folder rank 0 made or opened, for another rank under torchrun (no lock: rank 0
    holds it); a clear error where this process cannot see it (another machine, no shared disk)."""
    if not (Path(path) / MANIFEST).is_file():
        raise RunError(
            f"{path}: rank 0's run folder is not visible from this process (on {platform.node()}); "
            "on several machines, put --run-dir on a filesystem every machine sees, at the same path"
        )
    return RunFolder.open(path, LAYOUTS, lock=None)


def stage_record(path: Path, stage: str) -> dict[str, Any] | None:
    """A stage's manifest record in the run folder at `path` (a glance: no lock); None when
    there is no run folder there."""
    try:
        return RunFolder.open(path, LAYOUTS, lock=None).stage(stage)
    except RunError:
        return None


def stage_status(path: Path, stage: str) -> str | None:
    """A stage's status in the run folder at `path`; None when there is no run folder there."""
    record = stage_record(path, stage)
    return record.get("status", "pending") if record is not None else None


def open_newest(root: Path, kind: str | None, lock: str | None = "exclusive") -> RunFolder:
    """The newest intact run folder (of `kind`, when given) under `root`."""
    return RunFolder.open(newest(root, kind), LAYOUTS, lock)


def run_config(run: RunFolder) -> Any:
    """The resolved config saved in the folder, as its kind's schema (older keys upgraded)."""
    try:
        return load_config(run.path / CONFIG, schema=KINDS[run.kind].schema)
    except ConfigError as exc:
        raise RunError(f"{run.path}: its {CONFIG} is invalid: {exc.problems[0]}") from None


def config_text(cfg: Section) -> str:
    return config_to_yaml(cfg, _HEADER)


def save_config(run: RunFolder, cfg: Section) -> None:
    run.write_config_text(config_text(cfg))


def versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lora": __version__}
