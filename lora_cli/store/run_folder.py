"""Run folders: self-describing, written atomically, checked on load; no schema, no stage names.

    <folder>/
        config.yaml          the resolved config, as text (the stages layer parses it)
        manifest.json        kind, seed, versions, stages.<name>, files.<path>.sha256, children
        metrics.jsonl        one line per logged point, each naming its stage
        checkpoints/<stage>.safetensors   while a stage can be resumed
        <files each stage writes>         named by the kind's Layout
        <child folders>/     run folders of their own (a sweep's trials), listed in children

What a kind of run is (its stages in order, the files each writes, its config schema) is
told by the stages layer (lora_cli/stages/kinds.py) as a `Layout`. Every file is written
to a temporary file in the same folder, fsynced, then renamed over the old one, so a crash
never leaves a half-written file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_cli.store import locking
from lora_cli.errors import DamageError, RunError
from lora_cli.store.files import atomic_write, check_path, dumps, guard_write, remove, remove_empty_folder, remove_tree, utc_now
from lora_cli.store.manifest import FORMAT_VERSION, read_manifest
from lora_cli.store.new_folders import CONFIG, creation_leftover, new_folder, not_a_run
from lora_cli.store.checkpoints import Checkpoints, checkpoint_path
from lora_cli.store.metrics_log import METRICS, MetricsLog
from lora_cli.store.run_files import MANIFEST, RunFiles


@dataclass(frozen=True)
class Layout:
    """One kind of run, as the store needs to know it: the stages in order (re-running one
    discards those after it), the files each stage writes (its checkpoint comes on top) and
    those it writes only in some runs (a finetune writes a PEFT adapter or a full weight)."""

    stages: tuple[str, ...]
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    optional: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def files_of(self, stage: str) -> tuple[str, ...]:
        return (*self.files.get(stage, ()), *self.optional.get(stage, ()), checkpoint_path(stage))


def enclosing(path: Path) -> Path | None:
    """The run folder that lists `path` among its children (a sweep holding a trial or a
    base), or None for a folder of its own."""
    holder = Path(path).parent.parent
    try:
        children = read_manifest(holder / MANIFEST).get("children") or {}
    except (RunError, OSError):
        return None
    return holder if Path(path).relative_to(holder).as_posix() in children else None


class RunFolder(RunFiles, MetricsLog, Checkpoints):
    """One run folder of a kind whose `Layout` the caller gives. Stages read and write it only
    through these methods."""

    def __init__(self, path: Path, layout: Layout, repair: str | None = None, rebuild: str | None = None):
        self.path, self.layout = Path(path), layout
        # the commands that repair a damaged file here and a damaged manifest (the stages layer
        # knows them: a sweep repairs its trials); None: the folder can only be deleted
        self.repair, self.rebuild = repair, rebuild

    # ---- finding and creating ------------------------------------------------

    @classmethod
    def create(
        cls, layout: Layout, header: dict[str, Any], config_text: str, run_dir: Path | None, root: Path,
        force: bool = False, lock: bool = True,
    ) -> RunFolder:
        """A fresh run: `run_dir` if given, else root/<header name>-<UTC time>, locked for this
        process (a child folder, `lock=False`, is covered by its parent's lock).

        `header` (kind, name, seed, versions, …) opens the manifest. An existing run folder is
        started over only with `force` when any stage is complete; a non-empty folder that is
        not a run folder is never touched.
        """
        check_path(run_dir if run_dir is not None else root, "--run-dir" if run_dir is not None else "the runs root")
        run = cls(run_dir if run_dir is not None else new_folder(root, header["name"]), layout)
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path}: exists and is not a folder; choose another --run-dir")
        with guard_write(run.path):
            run.path.mkdir(parents=True, exist_ok=True)
        if lock:
            locking.acquire(run.path)
        run._check_writable_target(force)
        run.write_config_text(config_text)
        manifest = {"format_version": FORMAT_VERSION, **header, "created": utc_now(), "stages": {}, "files": {}}
        run._write_manifest(manifest)
        return run

    @classmethod
    def open(
        cls, path: Path, layouts: Mapping[str, Layout], lock: str | None = "exclusive", repair: str | None = None, rebuild: str | None = None
    ) -> RunFolder:
        """An existing run folder of one of the kinds in `layouts`; RunError if `path` is not one.

        `lock`: "exclusive" for a command that writes it, "shared" for one that only reads it
        and must not see a writer's work half done, None for a glance (`lora runs`).
        `repair`, `rebuild`: see __init__.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise RunError(f"{path}: no such run folder; start one with `lora pretrain` or `lora run CONFIG`")
        if not (folder / MANIFEST).is_file():
            raise RunError(not_a_run(folder))
        if lock is not None:
            locking.acquire(folder, shared=lock == "shared")
        manifest = read_manifest(folder / MANIFEST, rebuild)
        kind = manifest.get("kind", "pipeline")
        if kind not in layouts:
            raise RunError(f"{path}: unknown run kind {kind!r}; upgrade lora")
        run = cls(folder, layouts[kind], repair, rebuild)
        if lock == "exclusive":  # a kill between a stage's completion and its cleanup left these
            for name, rec in manifest["stages"].items():
                if rec.get("status") == "complete" and (run.path / checkpoint_path(name)).exists():
                    run.remove_checkpoint(name)
        return run

    @property
    def kind(self) -> str:
        return self.manifest().get("kind", "pipeline")

    # ---- child folders (a sweep's trials) --------------------------------------

    def create_child(self, rel: str, layout: Layout, header: dict[str, Any], config_text: str, register: bool = True) -> RunFolder:
        """A run folder of its own at `rel` inside this one, listed in this manifest's children
        (unless not `register`: the holder lists it later). It takes no lock of its own."""
        child = RunFolder.create(layout, header, config_text, self.path / rel, self.path, lock=False)
        child.repair = child.rebuild = self.repair  # what repairs this folder repairs its children
        if not register:
            return child
        m = self.manifest()
        m.setdefault("children", {})[rel] = {"kind": header.get("kind"), "name": header.get("name")}
        self._write_manifest(m)
        return child

    def children(self, layouts: Mapping[str, Layout]) -> dict[str, RunFolder]:
        """The child folders named in the manifest, opened without locks (this folder's covers them);
        damage in one is repaired as damage in this one is."""
        fix = self.repair
        return {rel: RunFolder.open(self.path / rel, layouts, None, fix, fix) for rel in self.manifest().get("children", {})}

    def _check_writable_target(self, force: bool) -> None:
        if (self.path / MANIFEST).is_file():
            stages = self.manifest()["stages"]
            done = [k for k, v in stages.items() if v.get("status") == "complete"]
            stopped = {k: epoch for k in stages if (epoch := self.interrupted(k)) is not None}
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
            self.forget_everything()  # --force: start over
            remove(self.path / METRICS)
        elif any(not creation_leftover(p) for p in self.path.iterdir()):
            raise RunError(f"{self.path}: not empty and not a lora run folder; choose a new or empty --run-dir")

    # ---- manifest and config -------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path / MANIFEST, self.rebuild)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.path / MANIFEST, (dumps(manifest, indent=2) + "\n").encode())

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def update_stage(self, name: str, **fields: Any) -> None:
        m = self.manifest()
        m["stages"].setdefault(name, {}).update(fields)
        self._write_manifest(m)

    def start_stage(self, name: str, resume: bool = False) -> None:
        """Mark `name` running and forget it and every later stage (their files and figures too).

        With `resume`, this stage's checkpoint is kept so training can continue from it.
        """
        order = self.layout.stages
        later_stages = order[order.index(name) :]
        keep = {checkpoint_path(name)} if resume else set()
        files = [rel for later in later_stages for rel in self.layout.files_of(later) if rel not in keep]
        self._forget(later_stages, files, running=name)

    def forget_everything(self) -> None:
        """Forget every stage the manifest records and delete every file and child folder it
        claims (--force)."""
        m = self.manifest()
        stages = tuple(m["stages"]) + self.layout.stages
        files = [*m["files"], *(checkpoint_path(s) for s in stages)]
        self._forget(stages, files, running=None)
        if m.get("children"):
            self._write_manifest({**self.manifest(), "children": {}})  # first, as in _forget
            for rel in m["children"]:
                remove_tree(self.path / rel)

    def _forget(self, stages: tuple[str, ...], files: list[str], running: str | None) -> None:
        m = self.manifest()
        stale = [f for f, drawn in m.get("figures", {}).items() if set(drawn) & set(stages)]
        for rel in stale:
            m["figures"].pop(rel)
        for stage in stages:
            m["stages"].pop(stage, None)
        for rel in files:
            m["files"].pop(rel, None)
        if running is not None:
            m["stages"][running] = {"status": "running", "started": utc_now()}
        self._write_manifest(m)  # first: a kill below leaves files the manifest no longer claims
        for rel in [*stale, *files]:
            remove(self.path / rel)
        for folder in sorted({Path(rel).parent for rel in [*stale, *files]} - {Path(".")}, reverse=True):
            remove_empty_folder(self.path / folder)  # checkpoints/, or adapter/ when a finetune now writes no adapter
        self._drop_metrics(stages)
        for leftover in self.path.rglob(".*.tmp"):  # from a write that was killed (atomic_write's names)
            remove(leftover)

    def update_entries(self, section: str, entries: dict[str, dict[str, Any]]) -> None:
        """Merge `entries` into the manifest's `section` (a sweep's trials) in one write."""
        m = self.manifest()
        for key, fields in entries.items():
            m.setdefault(section, {}).setdefault(key, {}).update(fields)
        self._write_manifest(m)

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
        return self.checkpoint_epoch(name)

    def require_complete(self, name: str, hint: str) -> dict[str, Any]:
        """Stage `name`'s record, once it is complete and its files are as recorded; RunError
        (what is wrong and what to do) otherwise."""
        rec = self.stage(name)
        status = rec.get("status")
        if status in ("running", "failed", "interrupted"):
            why = f"failed ({rec['error']})" if status == "failed" and rec.get("error") else "was interrupted"
            again = f"continue it with `{self.repair}`" if self.repair else f"start it over with `lora {name} --run-dir {self.path} --force`"
            raise RunError(f"{self.path}: the {name} stage {why}; {again}")
        if status != "complete":
            raise RunError(f"{self.path}: the {name} stage is not run; {hint}")
        problem = self.damage(name)
        if problem:
            raise DamageError(problem, self.fix())
        return rec

    def write_config_text(self, text: str) -> None:
        atomic_write(self.path / CONFIG, text.encode())
