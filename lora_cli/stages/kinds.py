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
from lora_cli.config import stages
from lora_cli.config.loading import config_to_yaml, load_config
from lora_cli.config.schemas import ApproxConfig, Config, Section
from lora_cli.config.sweep import SweepSpec
from lora_cli.errors import ConfigError, RunError
from lora_cli.store.run_folder import CONFIG, MANIFEST, Layout, RunFolder
from lora_cli.store.files import read_json_object
from lora_cli.store.run_index import newest

BASE = "base.safetensors"  # key "weight" (d_out, d_in)
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"  # PEFT layout
ADAPTER_CONFIG = "adapter/adapter_config.json"
FINETUNED = "finetuned.safetensors"  # key "weight": W' of a method with no PEFT adapter (full fine-tuning)
SHIFT = "shift.safetensors"  # key "true_delta": ΔW* = (θ2 − θ)ᵀ (d_out, d_in), for figures
MERGED = "merged.safetensors"  # key "weight" (d_out, d_in)
APPROX = "approx.safetensors"  # keys "target", "A", "B"
RESULTS_CSV = "results.csv"  # a row per trial (a run: one), every config key (stages/result_rows.py)
RESULTS_JSONL = "results.jsonl"
CURVES_CSV = "curves.csv"  # every logged metric, long format
TABLES = (RESULTS_CSV, RESULTS_JSONL, CURVES_CSV)  # rewritten from the records whenever a stage ends
SEEDS_CSV = "seeds.csv"  # a sweep with a seed axis: each point's mean, std, min and max over the seeds


# the pipeline's stages in order, and those that train, as config/stages.py declares them
PIPELINE, TRAINED = stages.PIPELINE, stages.TRAINED


@dataclass(frozen=True)
class Kind:
    schema: type[Section]
    layout: Layout


KINDS: dict[str, Kind] = {
    "pipeline": Kind(
        Config,
        Layout(
            PIPELINE,
            {"pretrain": (BASE,), "finetune": (SHIFT,), "merge": (MERGED,)},
            {"pretrain": TABLES, "finetune": (ADAPTER_WEIGHTS, ADAPTER_CONFIG, FINETUNED)},  # by method: a PEFT adapter, or W' (stages/trained_files.py)
        ),
    ),
    "approx": Kind(ApproxConfig, Layout(("approx",), {"approx": (APPROX,)})),
    # a sweep's trials and bases are run folders of their own, listed as its children
    "sweep": Kind(SweepSpec, Layout(("sweep",), {"sweep": TABLES}, {"sweep": (SEEDS_CSV,)})),
}
LAYOUTS = {name: kind.layout for name, kind in KINDS.items()}
_HEADER = "# Resolved config of this run; rerun it with: lora run <this file>\n"


def kind_of(cfg: Section) -> str:
    return next(name for name, kind in KINDS.items() if isinstance(cfg, kind.schema))


def create_run(cfg: Section, run_dir: Path | None, root: Path, force: bool = False) -> RunFolder:
    """A fresh run folder for `cfg` (see RunFolder.create), its config and manifest written."""
    kind = kind_of(cfg)
    header = {"kind": kind, "name": cfg.name, "seed": cfg.seed, "versions": versions()}
    run = RunFolder.create(KINDS[kind].layout, header, config_text(cfg), run_dir, root, force)
    run.repair = repair_hint(kind, run.path)
    return run


# what takes a folder of each kind, for a command given the wrong kind ({path}: the folder)
FITS = {
    "pipeline": "`lora run --resume --run-dir {path}` finishes it; lora finetune, merge, plot and data take it",
    "approx": "`lora plot {path}` draws it; `lora approx -c {path}/config.yaml --run-dir {path} --force` runs it again",
    "sweep": "`lora sweep --resume {path}` finishes it and `lora plot {path}` draws it; its trials ({path}/trials/<id>) are pipeline runs",
}


def open_run(path: Path, lock: str | None = "exclusive", expect: str | None = None) -> RunFolder:
    """The run folder at `path`, with the advice for damage that fits it (see repair_hint);
    RunError naming the kind found, and what takes it, when it is not of kind `expect`."""
    if not Path(path).is_dir():
        start = {"sweep": "start one with `lora sweep SPEC`", "approx": "start one with `lora approx`"}.get(expect or "", "start one with `lora run CONFIG`")
        raise RunError(f"{path}: no such run folder; {start}, or list them with `lora runs`")
    sweep = sweep_holding(Path(path))
    rebuild = repair_hint("sweep", sweep) if sweep else None
    run = RunFolder.open(path, LAYOUTS, lock, rebuild=rebuild)
    run.repair = rebuild or repair_hint(run.kind, run.path)
    if expect is not None and run.kind != expect:
        raise RunError(f"{run.path}: is {_a(run.kind)} run folder, not {_a(expect)} run; {FITS[run.kind].format(path=run.path)}")
    return run


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def repair_hint(kind: str, path: Path) -> str:
    """The command that repairs (or finishes) a folder of `kind` at `path`, running again what
    it finds damaged or undone (for a sweep's trial or base: the sweep's)."""
    return {
        "pipeline": f"lora run --resume --run-dir {path}",
        "approx": f"lora approx -c {path}/{CONFIG} --run-dir {path} --force",
        "sweep": f"lora sweep --resume {path}",
    }[kind]


def sweep_holding(path: Path) -> Path | None:
    """The sweep folder that holds `path` as one of its trials or bases, else None."""
    parent = path.parent
    if parent.name not in ("trials", "bases"):
        return None
    try:
        return parent.parent if read_json_object(parent.parent / MANIFEST).get("kind") == "sweep" else None
    except RunError:
        return None


def open_for_follower(path: Path) -> RunFolder:
    """The run folder rank 0 made or opened, for another rank under torchrun (no lock: rank 0
    holds it); a clear error where this process cannot see it (another machine, no shared disk)."""
    if not (Path(path) / MANIFEST).is_file():
        raise RunError(
            f"{path}: rank 0's run folder is not visible from this process (on {platform.node()}); "
            "on several machines, put --run-dir on a filesystem every machine sees, at the same path"
        )
    return open_run(path, lock=None)


def stage_record(path: Path, stage: str) -> dict[str, Any] | None:
    """A stage's manifest record in the run folder at `path` (a glance: no lock); None when
    there is no run folder there."""
    try:
        return open_run(path, lock=None).stage(stage)
    except RunError:
        return None


def stage_status(path: Path, stage: str) -> str | None:
    """A stage's status in the run folder at `path`; None when there is no run folder there."""
    record = stage_record(path, stage)
    return record.get("status", "pending") if record is not None else None


def open_newest(root: Path, kind: str | None, lock: str | None = "exclusive") -> RunFolder:
    """The newest intact run folder (of `kind`, when given) under `root`."""
    return open_run(newest(root, kind), lock)


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

    from lora_cli.runtime.machine import describe

    return {"python": platform.python_version(), "torch": torch.__version__, "lora": __version__, "machine": describe()}
