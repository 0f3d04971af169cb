"""Run folders: self-describing, written atomically, checked on load.

    runs/<name>-<UTC time>/
        config.yaml          resolved config
        manifest.json        seed, versions, stages.<name>, files.<path>.sha256
        metrics.jsonl        one line per logged point
        base.safetensors     key "weight" (d_out, d_in)
        adapter/adapter_model.safetensors, adapter/adapter_config.json   (PEFT layout)
        shift.safetensors    key "true_delta" (d_out, d_in): the update the adapter should learn
        merged.safetensors   key "weight" (d_out, d_in)

Every file is written to a temporary file in the same folder, fsynced, then
renamed over the old one, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_cli import __version__
from lora_cli.store import locking
from lora_cli.config.loading import ApproxConfig, Config, config_to_yaml, load_config
from lora_cli.errors import ConfigError, RunError
from lora_cli.store.files import atomic_write, dumps, guard_write, read_json_object, remove, remove_empty_folder, utc_now
from lora_cli.store.run_files import MANIFEST, METRICS, RunFiles

FORMAT_VERSION = 1

CONFIG = "config.yaml"
BASE = "base.safetensors"
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"
ADAPTER_CONFIG = "adapter/adapter_config.json"
MERGED = "merged.safetensors"
SHIFT = "shift.safetensors"  # the true ΔW* = (θ2 − θ)ᵀ the adapter should learn, for figures
APPROX = "approx.safetensors"
# kind -> (config schema, stages in order); a stage's rerun discards the stages after it
KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "pipeline": (Config, ("pretrain", "finetune", "merge")),
    "approx": (ApproxConfig, ("approx",)),
}
def checkpoint_path(stage: str) -> str:
    return f"checkpoints/{stage}.safetensors"


STAGE_FILES = {
    "pretrain": (BASE, checkpoint_path("pretrain")),
    "finetune": (ADAPTER_WEIGHTS, ADAPTER_CONFIG, SHIFT, checkpoint_path("finetune")),
    "merge": (MERGED,),
    "approx": (APPROX,),
}


class RunFolder(RunFiles):
    """One run folder. Stages read and write it only through these methods."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- finding and creating ------------------------------------------------

    @classmethod
    def create(cls, cfg: Config | ApproxConfig, run_dir: Path | None, root: Path, force: bool = False) -> RunFolder:
        """A fresh run: `run_dir` if given, else root/<name>-<UTC time>, locked for this process.

        An existing run folder is started over only with `force` when any stage is complete;
        a non-empty folder that is not a run folder is never touched.
        """
        run = cls(run_dir if run_dir is not None else _new_folder(root, cfg.name))
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path}: exists and is not a folder; choose another --run-dir")
        with guard_write(run.path):
            run.path.mkdir(parents=True, exist_ok=True)
        locking.acquire(run.path)
        run._check_writable_target(force)
        run.write_config(cfg)
        run._write_manifest(
            {
                "format_version": FORMAT_VERSION,
                "kind": next(k for k, (schema, _) in KINDS.items() if isinstance(cfg, schema)),
                "name": cfg.name,
                "created": utc_now(),
                "seed": cfg.seed,
                "versions": _versions(),
                "stages": {},
                "files": {},
            }
        )
        return run

    @classmethod
    def open(cls, path: Path, lock: str | None = "exclusive") -> RunFolder:
        """An existing run folder; RunError if `path` is not one.

        `lock`: "exclusive" for a command that writes it, "shared" for one that only reads it
        and must not see a writer's work half done, None for a glance (`lora runs`).
        """
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"{path}: no such run folder; start one with `lora pretrain` or `lora run CONFIG`")
        if not (run.path / MANIFEST).is_file():
            raise RunError(f"{path}: not a lora run folder (no {MANIFEST}); start one with `lora pretrain`")
        if lock is not None:
            locking.acquire(run.path, shared=lock == "shared")
        manifest = run.manifest()
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RunError(
                f"{path}: written by a newer lora (run format {version}, this lora reads ≤ {FORMAT_VERSION}); upgrade lora"
            )
        if manifest.get("kind", "pipeline") not in KINDS:
            raise RunError(f"{path}: unknown run kind {manifest.get('kind')!r}; upgrade lora")
        if lock == "exclusive":  # a kill between a stage's completion and its cleanup left these
            for name, rec in manifest["stages"].items():
                if rec.get("status") == "complete" and (run.path / checkpoint_path(name)).exists():
                    run.remove_checkpoint(name)
        return run

    @property
    def kind(self) -> str:
        return self.manifest().get("kind", "pipeline")

    def _check_writable_target(self, force: bool) -> None:
        if (self.path / MANIFEST).is_file():
            existing = RunFolder.open(self.path)
            stages = existing.manifest()["stages"]
            done = [k for k, v in stages.items() if v.get("status") == "complete"]
            stopped = {k: epoch for k in stages if (epoch := existing.interrupted(k)) is not None}
            if stopped and not force:
                name, epoch = next(iter(stopped.items()))
                raise RunError(
                    f"{self.path}: holds an interrupted {name} (checkpoint at epoch {epoch}); "
                    f"continue it with --resume, or pass --force to start over"
                )
            if done and not force:
                raise RunError(
                    f"{self.path}: already holds a run ({', '.join(done)} complete); pass --force to start over "
                    "in it, or leave out --run-dir for a new folder"
                )
            existing.start_stage(KINDS[existing.kind][1][0], forget_only=True)  # --force: start over
            remove(self.path / METRICS)
        elif any(not _creation_leftover(p) for p in self.path.iterdir()):
            raise RunError(f"{self.path}: not empty and not a lora run folder; choose a new or empty --run-dir")

    # ---- manifest and config -------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return read_json_object(self.path / MANIFEST)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.path / MANIFEST, (dumps(manifest, indent=2) + "\n").encode())

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def update_stage(self, name: str, **fields: Any) -> None:
        m = self.manifest()
        m["stages"].setdefault(name, {}).update(fields)
        self._write_manifest(m)

    def start_stage(self, name: str, resume: bool = False, forget_only: bool = False) -> None:
        """Mark `name` running and forget it and every later stage (their files and figures too).

        With `resume`, this stage's checkpoint is kept so training can continue from it;
        with `forget_only`, nothing is marked running.
        """
        m = self.manifest()
        order = KINDS[m.get("kind", "pipeline")][1]
        later_stages = order[order.index(name) :]
        keep = {checkpoint_path(name)} if resume else set()
        stale = [f for f, stages in m.get("figures", {}).items() if set(stages) & set(later_stages)]
        for rel in stale:
            m["figures"].pop(rel)
        for later in later_stages:
            m["stages"].pop(later, None)
            for rel in STAGE_FILES[later]:
                m["files"].pop(rel, None)
                if rel not in keep:
                    stale.append(rel)
        if not forget_only:
            m["stages"][name] = {"status": "running", "started": utc_now()}
        self._write_manifest(m)  # first: a kill below leaves files the manifest no longer claims
        for rel in stale:
            remove(self.path / rel)
        remove_empty_folder(self.path / "checkpoints")
        self._drop_metrics(later_stages)
        for leftover in self.path.rglob(".*.tmp"):  # from a write that was killed (atomic_write's names)
            remove(leftover)

    def record_figures(self, figures: dict[str, list[str]]) -> None:
        """Note PNGs written into the folder and the stages they draw, so re-running one of
        those stages deletes them instead of leaving pictures of results that are gone."""
        m = self.manifest()
        m.setdefault("figures", {}).update(figures)
        self._write_manifest(m)

    def interrupted(self, name: str) -> int | None:
        """The epoch of `name`'s checkpoint when the stage stopped before completing, else None."""
        if self.stage(name).get("status") == "complete" or not (self.path / checkpoint_path(name)).is_file():
            return None
        state = self.load_checkpoint(name)
        return state.epoch if state else None

    # ---- checkpoints (format in lora_cli.store.checkpoints) ------------------------

    def save_checkpoint(self, stage: str, state: Any) -> None:
        from lora_cli.store.checkpoints import encode

        atomic_write(self.path / checkpoint_path(stage), encode(stage, state))
        self.update_stage(stage, checkpoint_epoch=state.epoch)

    def load_checkpoint(self, stage: str) -> Any:
        """The stage's TrainState, or None when it has no checkpoint."""
        from lora_cli.store.checkpoints import decode

        path = self.path / checkpoint_path(stage)
        return decode(path, stage) if path.is_file() else None

    def remove_checkpoint(self, stage: str) -> None:
        """Delete the stage's checkpoint (call once its result is durable) and its record."""
        remove(self.path / checkpoint_path(stage))
        remove_empty_folder(self.path / "checkpoints")
        m = self.manifest()
        if m["stages"].get(stage, {}).pop("checkpoint_epoch", None) is not None:
            self._write_manifest(m)

    def require_complete(self, name: str, hint: str) -> dict[str, Any]:
        rec = self.stage(name)
        status = rec.get("status")
        if status in ("running", "failed", "interrupted"):
            why = f"failed ({rec['error']})" if status == "failed" and rec.get("error") else "was interrupted"
            raise RunError(
                f"{self.path}: the {name} stage {why}; continue it with `lora {name} --resume --run-dir {self.path}` "
                f"or start it over with --force"
            )
        if status != "complete":
            raise RunError(f"{self.path}: the {name} stage is not run; {hint}")
        return rec

    def write_config(self, cfg: Config) -> None:
        header = "# Resolved config of this run; rerun it with: lora run <this file>\n"
        atomic_write(self.path / CONFIG, config_to_yaml(cfg, header).encode())

    def config(self) -> Any:
        """The resolved config saved in the folder, as its kind's schema."""
        try:
            return load_config(self.path / CONFIG, schema=KINDS[self.kind][0])
        except ConfigError as exc:
            raise RunError(f"{self.path}: its {CONFIG} is invalid: {exc.problems[0]}") from None


def _new_folder(root: Path, name: str) -> Path:
    """root/<name>-<UTC time>, made here so two processes starting together never share one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with guard_write(root):
        root.mkdir(parents=True, exist_ok=True)
        for suffix in range(1, 10_000):
            path = root / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    raise RunError(f"{root}: too many run folders named {name}-{stamp}; choose a --run-dir")


def _creation_leftover(path: Path) -> bool:
    """What a create killed before manifest.json existed leaves: config.yaml, the lock or a temporary."""
    return path.name in (CONFIG, locking.LOCK) or (path.name.startswith(".") and path.name.endswith(".tmp"))


def _versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lora": __version__}
