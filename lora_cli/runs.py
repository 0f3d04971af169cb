"""Run folders: self-describing, written atomically, checked on load.

    runs/<name>-<UTC time>/
        config.yaml          resolved config
        manifest.json        seed, versions, stages.<name>, files.<path>.sha256
        metrics.jsonl        one line per logged point
        base.safetensors     key "weight" (d_out, d_in)
        adapter/adapter_model.safetensors, adapter/adapter_config.json   (PEFT layout)
        merged.safetensors   key "weight" (d_out, d_in)

Every file is written to a temporary file in the same folder, fsynced, then
renamed over the old one, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_cli import __version__
from lora_cli.config import ApproxConfig, Config, config_to_yaml, load_config
from lora_cli.errors import ConfigError, RunError
from lora_cli.files import atomic_write, read_json_object, sha256_bytes, utc_now

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BASE = "base.safetensors"
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"
ADAPTER_CONFIG = "adapter/adapter_config.json"
MERGED = "merged.safetensors"
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
    "finetune": (ADAPTER_WEIGHTS, ADAPTER_CONFIG, checkpoint_path("finetune")),
    "merge": (MERGED,),
    "approx": (APPROX,),
}


class RunFolder:
    """One run folder. Stages read and write it only through these methods."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- finding and creating ------------------------------------------------

    @classmethod
    def create(cls, cfg: Config | ApproxConfig, run_dir: Path | None, root: Path, force: bool = False) -> RunFolder:
        """A fresh run: `run_dir` if given, else root/<name>-<UTC time>.

        An existing run folder is started over only with `force` when any stage is complete;
        a non-empty folder that is not a run folder is never touched.
        """
        if run_dir is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            run_dir = root / f"{cfg.name}-{stamp}"
            suffix = 2
            while run_dir.exists():
                run_dir = root / f"{cfg.name}-{stamp}-{suffix}"
                suffix += 1
        run = cls(run_dir)
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
    def open(cls, path: Path) -> RunFolder:
        """An existing run folder; RunError if `path` is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"{path}: no such run folder; start one with `lora pretrain` or `lora run CONFIG`")
        if not (run.path / MANIFEST).is_file():
            raise RunError(f"{path}: not a lora run folder (no {MANIFEST}); start one with `lora pretrain`")
        manifest = run.manifest()
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RunError(
                f"{path}: written by a newer lora (run format {version}, this lora reads ≤ {FORMAT_VERSION}); upgrade lora"
            )
        if manifest.get("kind", "pipeline") not in KINDS:
            raise RunError(f"{path}: unknown run kind {manifest.get('kind')!r}; upgrade lora")
        return run

    @property
    def kind(self) -> str:
        return self.manifest().get("kind", "pipeline")

    @classmethod
    def newest(cls, root: Path) -> RunFolder:
        """The run folder under `root` created last."""
        runs = list_runs(root)
        if not runs:
            raise RunError(f"no run folders in {root}/; start one with `lora pretrain` or `lora run CONFIG`")
        return cls.open(runs[-1].path)

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
            for rel in (*[f for files in STAGE_FILES.values() for f in files], METRICS):  # --force: start over
                (self.path / rel).unlink(missing_ok=True)
        elif self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: exists and is not a folder; choose another --run-dir")
        elif self.path.is_dir() and any(not _creation_leftover(p) for p in self.path.iterdir()):
            raise RunError(f"{self.path}: not empty and not a lora run folder; choose a new or empty --run-dir")

    # ---- manifest and config -------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return read_json_object(self.path / MANIFEST)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.path / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def update_stage(self, name: str, **fields: Any) -> None:
        m = self.manifest()
        m["stages"].setdefault(name, {}).update(fields)
        self._write_manifest(m)

    def start_stage(self, name: str, resume: bool = False) -> None:
        """Mark `name` running and forget it and every later stage (their files too).

        With `resume`, this stage's checkpoint is kept so training can continue from it.
        """
        m = self.manifest()
        order = KINDS[m.get("kind", "pipeline")][1]
        later_stages = order[order.index(name) :]
        keep = {checkpoint_path(name)} if resume else set()
        for later in later_stages:
            m["stages"].pop(later, None)
            for rel in STAGE_FILES[later]:
                m["files"].pop(rel, None)
                if rel not in keep:
                    (self.path / rel).unlink(missing_ok=True)
        m["stages"][name] = {"status": "running", "started": utc_now()}
        self._write_manifest(m)
        self._drop_metrics(later_stages)
        for leftover in self.path.rglob(".*.tmp"):  # from a write that was killed (atomic_write's names)
            leftover.unlink(missing_ok=True)

    def interrupted(self, name: str) -> int | None:
        """The epoch of `name`'s checkpoint when the stage stopped before completing, else None."""
        if self.stage(name).get("status") == "complete" or not (self.path / checkpoint_path(name)).is_file():
            return None
        state = self.load_checkpoint(name)
        return state.epoch if state else None

    # ---- checkpoints (format in lora_cli.checkpoints) ------------------------

    def save_checkpoint(self, stage: str, state: Any) -> None:
        from lora_cli.checkpoints import encode

        atomic_write(self.path / checkpoint_path(stage), encode(stage, state))
        self.update_stage(stage, checkpoint_epoch=state.epoch)

    def load_checkpoint(self, stage: str) -> Any:
        """The stage's TrainState, or None when it has no checkpoint."""
        from lora_cli.checkpoints import decode

        path = self.path / checkpoint_path(stage)
        return decode(path) if path.is_file() else None

    def remove_checkpoint(self, stage: str) -> None:
        (self.path / checkpoint_path(stage)).unlink(missing_ok=True)

    def require_complete(self, name: str, hint: str) -> dict[str, Any]:
        rec = self.stage(name)
        status = rec.get("status")
        if status in ("running", "failed"):
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

    # ---- tensors and metrics -------------------------------------------------

    def save_tensors(self, rel: str, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> str:
        """Write a safetensors file atomically and record its SHA-256; returns the hash."""
        from safetensors.torch import save

        data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
        return self._save_bytes(rel, data)

    def save_json(self, rel: str, obj: Any) -> str:
        return self._save_bytes(rel, (json.dumps(obj, indent=2) + "\n").encode())

    def _save_bytes(self, rel: str, data: bytes) -> str:
        atomic_write(self.path / rel, data)
        digest = sha256_bytes(data)
        m = self.manifest()
        m["files"][rel] = {"sha256": digest, "bytes": len(data)}
        self._write_manifest(m)
        return digest

    def load_tensors(self, rel: str, stage: str) -> dict[str, Any]:
        """Read a safetensors file after checking it against the hash in the manifest."""
        from safetensors.torch import load

        data = self._load_bytes(rel, stage)
        try:
            return load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise RunError(f"{self.path / rel}: not a readable safetensors file ({exc}); rerun `lora {stage}`") from None

    def load_json(self, rel: str, stage: str) -> Any:
        return json.loads(self._load_bytes(rel, stage))

    def _load_bytes(self, rel: str, stage: str) -> bytes:
        path = self.path / rel
        if not path.is_file():
            raise RunError(f"{path}: missing; rerun `lora {stage} --run-dir {self.path}`")
        data = path.read_bytes()
        expected = self.manifest()["files"].get(rel, {}).get("sha256")
        if expected != sha256_bytes(data):
            raise RunError(
                f"{path}: does not match the SHA-256 recorded in {MANIFEST} (changed or truncated); "
                f"rerun `lora {stage} --run-dir {self.path}`"
            )
        return data

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def add_metrics(self, rows: list[dict[str, Any]]) -> None:
        self._write_metrics(self.metrics() + rows)

    def _drop_metrics(self, stages: tuple[str, ...]) -> None:
        rows = self.metrics()
        kept = [r for r in rows if r.get("stage") not in stages]
        if len(kept) != len(rows):
            self._write_metrics(kept)

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())


def _creation_leftover(path: Path) -> bool:
    """What a create killed before manifest.json existed leaves: config.yaml or a temporary."""
    return path.name == CONFIG or (path.name.startswith(".") and path.name.endswith(".tmp"))


def list_runs(root: Path) -> list[RunFolder]:
    """Every run folder directly under `root`, oldest first."""
    if not root.is_dir():
        return []
    runs = [RunFolder(c) for c in root.iterdir() if (c / MANIFEST).is_file() and _safe(c)]
    return sorted(runs, key=lambda r: (str(r.manifest().get("created", "")), r.path.name))


def _safe(folder: Path) -> bool:
    """The folder's manifest reads as a JSON object (damaged folders are left out of listings)."""
    try:
        read_json_object(folder / MANIFEST)
    except RunError:
        return False
    return True


def _versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lora": __version__}
