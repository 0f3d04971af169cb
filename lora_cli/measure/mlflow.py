"""The MLflow sink: each training stage of a run folder as an MLflow run, its metrics per log
epoch, the resolved config as parameters, the final numbers (optimum and gap beside the final
loss) and the folder's manifest and config (and report) as artifacts.

The store is a local SQLite file, `<runs root>/mlflow.db`, with artifacts in
`<runs root>/mlartifacts/`; MLFLOW_TRACKING_URI chooses another store (a SQLite file keeps
its artifacts beside it, a tracking server where it is set to). The experiment is the top folder's name (a pipeline config's `name`; a sweep's
`<name>-sweep`). A sweep is a parent run with a nested run per trial and per base it
pretrained; a stage run is found again by its tags (`lora.run_dir`, `lora.stage`), so a stage
that starts again (rerun or resumed: its earlier points are replayed) replaces its run.

    mlflow ui --backend-store-uri sqlite:///runs/mlflow.db
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from lora_cli.measure.trackers import final_metrics
from lora_cli.store.manifest import read_manifest
from lora_cli.store.run_files import MANIFEST
from lora_cli.store.run_folder import enclosing
from lora_cli.train.loop import LogPoint

ARTIFACTS = ("manifest.json", "config.yaml", "report.html")
GROUP_ARTIFACTS = (*ARTIFACTS, "grid.json", "results.csv", "curves.csv")
GROUP_STAGE = "sweep"
_BATCH = 100  # MLflow takes at most 100 params and 1,000 metrics in one batch


def tracking_uri(root: Path) -> str:
    """Where the runs under `root` are tracked: MLFLOW_TRACKING_URI, else root/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


class _Store:
    """The client, the experiment and the run-finding for one run folder tree."""

    def __init__(self, run: Any):
        for name in ("mlflow", "alembic"):  # the store's own schema messages are not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.group = enclosing(run.path)
        top = self.group or run.path
        self.uri = tracking_uri(top.parent)
        self.client = MlflowClient(self.uri)
        name = _manifest_name(top)
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        location = _artifacts(self.uri)
        self.experiment = found.experiment_id if found is not None else self.client.create_experiment(name, artifact_location=location)

    def find(self, path: Path, stage: str):
        runs = self.client.search_runs([self.experiment], filter_string=f"tags.`lora.key` = '{_key(path, stage)}'", max_results=1)
        return runs[0] if runs else None

    def create(self, path: Path, stage: str, name: str, parent: str | None = None) -> str:
        tags = {"lora.key": _key(path, stage), "lora.run_dir": str(path.resolve()), "lora.stage": stage}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment, run_name=name, tags=tags).info.run_id

    def group_run(self, sweep: Path | None = None) -> str:
        """The parent run of the sweep folder `sweep` (default: the one this folder is in): found, or made."""
        sweep = sweep or self.group
        found = self.find(sweep, GROUP_STAGE)
        return found.info.run_id if found is not None else self.create(sweep, GROUP_STAGE, sweep.name)

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[i:i + _BATCH])

    def metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items() if v is not None])

    def artifacts(self, run_id: str, folder: Path, names: tuple[str, ...]) -> None:
        for name in names:
            if (folder / name).is_file():
                self.client.log_artifact(run_id, str(folder / name))


class Sink:
    def __init__(self, run: Any, stage: str, hparams: dict[str, Any]):
        self.store, self.folder = _Store(run), run.path
        old = self.store.find(run.path, stage)
        if old is not None:  # the stage started again: its points come again, into a fresh run
            self.store.client.delete_run(old.info.run_id)
        parent = self.store.group_run() if self.store.group is not None else None
        name = f"{run.path.name}/{stage}" if parent is None else run.path.name
        self.id = self.store.create(run.path, stage, name, parent)
        self.store.params(self.id, hparams)
        self.where = f"{self.store.uri} run {self.id}"

    def __call__(self, stage: str, point: LogPoint, baseline: float) -> None:
        self.store.metrics(self.id, {"loss": point.loss, **point.metrics}, point.epoch)

    def close(self, final: dict[str, float]) -> None:
        """Final numbers as `final/<name>`, the folder's files as artifacts; the run finished."""
        self.store.metrics(self.id, final_metrics(final), 0)
        self.store.artifacts(self.id, self.folder, ARTIFACTS)
        self.store.client.set_terminated(self.id)


def finish(run: Any, params: dict[str, Any], final: dict[str, float]) -> str | None:
    """A sweep folder `run` is done: its parent run gets the spec as parameters, the trial
    counts, the sweep's files as artifacts, and ends. Nothing for a folder of another kind."""
    if not (run.path / "grid.json").is_file():
        return None
    store = _Store(run)
    run_id = store.group_run(run.path)  # the sweep's own parent run
    store.params(run_id, params)  # MLflow takes a parameter again when its value is the same
    store.metrics(run_id, final, 0)
    store.artifacts(run_id, run.path, GROUP_ARTIFACTS)
    store.client.set_terminated(run_id)
    return f"{store.uri} run {run_id}"


def attach(run: Any, rel: str) -> None:
    """A file written after the folder's tracker runs ended (report.html): added to each of
    them (each stage's run; a sweep's parent run)."""
    store = _Store(run)
    for stage in (*run.manifest().get("stages", {}), GROUP_STAGE):
        found = store.find(run.path, stage)
        if found is not None:
            store.artifacts(found.info.run_id, run.path, (rel,))


def _artifacts(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite store (never the
    working folder's ./mlruns); a tracking server's own choice otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _key(path: Path, stage: str) -> str:
    """A tag value safe in a search filter for (folder, stage)."""
    return hashlib.sha256(f"{path.resolve()}\n{stage}".encode()).hexdigest()[:32]


def _manifest_name(path: Path) -> str:
    return read_manifest(path / MANIFEST).get("name") or path.name
