"""Finding run folders under a runs root: list them, pick the newest of a kind, summarise.

Listing never locks and never hides a folder: one whose manifest cannot be read is listed
as damaged, with what to do about it, and a stage recorded as running whose folder no
process holds is shown as interrupted (its process was killed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_cli.store import locking
from lora_cli.errors import RunError
from lora_cli.store.manifest import read_manifest
from lora_cli.store.run_files import MANIFEST

SUMMARY_KEYS = ("status", "seconds", "baseline_loss", "final_loss", "error", "epoch", "checkpoint_epoch", "trials", "complete", "failed",
                "method", "rank", "alpha", "init", "final_test_loss", "optimal_loss", "gap")


@dataclass
class Listed:
    """One folder under the root, as `lora runs` shows it."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    damage: str | None = None  # why the manifest could not be read, and what to do

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "pipeline")

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))


def list_runs(root: Path) -> list[Listed]:
    """Every folder directly under `root` that holds a manifest, oldest first, damaged ones included.

    Raises:
        RunError: `root` exists and is not a folder.
    """
    if root.exists() and not root.is_dir():
        raise RunError(f"{root}: is a file, not a folder of run folders; give the folder with --root (or $LORA_RUNS_DIR)")
    if not root.is_dir():
        return []
    listed = []
    for folder in root.iterdir():
        if not (folder / MANIFEST).is_file():
            continue
        try:
            listed.append(Listed(folder, read_manifest(folder / MANIFEST)))
        except RunError as exc:
            listed.append(Listed(folder, damage=str(exc)))
    return sorted(listed, key=lambda r: (r.created, r.path.name))


def newest(root: Path, kind: str | None = None) -> Path:
    """The folder of the newest intact run (of `kind`, when given) under `root`.

    Raises:
        RunError: there is none; says what there is instead and how to start one.
    """
    intact = [r for r in list_runs(root) if r.damage is None]
    matching = [r for r in intact if kind is None or r.kind == kind]
    if matching:
        return matching[-1].path
    if intact:
        kinds = ", ".join(sorted({r.kind for r in intact}))
        raise RunError(
            f"no {kind} run folders in {root}/ (only {kinds}); start one with `lora pretrain` or `lora run CONFIG`"
        )
    raise RunError(f"no run folders in {root}/; start one with `lora pretrain` or `lora run CONFIG`")


def whole_safetensors(path: Path) -> bool:
    """True when `path` is a safetensors file whose header parses and whose tensors it describes
    all fit in the file (read from the header alone, without loading a tensor)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 2**27 else None
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        return path.stat().st_size >= 8 + size + max(ends, default=0)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        return False


def summary(run: Listed, root: Path) -> dict[str, Any]:
    """What `lora runs` prints and emits for one folder; names are relative to `root`."""
    name = str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)
    base = {"run_dir": str(run.path), "name": name}
    if run.damage is not None:
        return {**base, "kind": None, "created": None, "damaged": run.damage, "stages": {}}
    busy = locking.holder(run.path)
    stages = {}
    for stage, rec in run.manifest.get("stages", {}).items():
        row = {k: rec[k] for k in SUMMARY_KEYS if k in rec}
        if rec.get("adapter_source"):  # lora merge --adapter: the merged weight is not the run's own adapter
            row["imported"] = rec["adapter_source"].get("path")
        if row.get("status") == "running" and busy is None:
            row["status"] = "interrupted"  # recorded as running, yet no process holds the folder: it was killed
        if row.get("checkpoint_epoch") is not None and not whole_safetensors(run.path / "checkpoints" / f"{stage}.safetensors"):
            row.pop("checkpoint_epoch")
            row["checkpoint"] = "damaged"
        stages[stage] = row
    return {**base, "kind": run.kind, "created": run.created, "running_in": busy, "stages": stages}

