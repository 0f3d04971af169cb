"""Typed stage results, and the one place they become JSON: the manifest entry
(stages.<name>), the metrics lines and `--json` all come from `entry` and `to_json` here;
tables and figures read the same objects (`load` rebuilds one from a run folder).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import NotRequired, TypedDict

from lora_cli.errors import DamageError
from lora_cli.store.files import dumps, utc_now
from lora_cli.store.run_files import MANIFEST

# in --json and the object, not in the manifest entry: where it is, what it is, its metrics lines
_NOT_IN_ENTRY = ("stage", "run_dir", "kept", "history")
_LEGACY = ("dora",)  # fields records held once, still part of what their digest covers


@dataclass(kw_only=True)
class Parameters:
    """Full d_in·d_out against the `lora` numbers a rank-`rank` `method` trains."""

    full: int
    lora: int
    rank: int
    reduction: float
    compression: float
    method: str = "lora"  # an entry of methods/registry.METHODS (records before methods: lora or DoRA)

    @classmethod
    def count(cls, d_in: int, d_out: int, rank: int, lora: int, method: str = "lora") -> Parameters:
        full = d_in * d_out
        return cls(full=full, lora=lora, rank=rank, reduction=1 - lora / full, compression=full / lora, method=method)


class Comparison(TypedDict):
    """core.subspace.Comparison as a record holds it (a NaN is stored as null)."""

    relative_error: float | None
    energy_captured: float | None
    best_energy: float | None
    column_angles: list[float | None]
    row_angles: list[float | None]
    singular_values: list[float | None]


class Subspace(TypedDict):
    """core.subspace.Diagnostics as a record holds it."""

    rank: int
    singular_values: list[float | None]
    stable_rank: float | None
    shift: Comparison
    target: Comparison
    rank_90: NotRequired[int | None]  # absent in records made before they were measured
    intruders: NotRequired[int | None]
    optimum_intruders: NotRequired[int | None]
    optimum_column_angle: NotRequired[float | None]
    optimum_row_angle: NotRequired[float | None]


class AdapterSource(TypedDict):
    """An imported PEFT adapter folder, as `lora merge --adapter` recorded it."""

    path: str
    sha256: str
    rank: int
    alpha: float
    scaling_rule: str
    dora: NotRequired[bool]  # before methods: whether it was DoRA
    method: NotRequired[str]
    module: NotRequired[str]  # not in records written before they were kept
    target_modules: NotRequired[Any]


@dataclass(kw_only=True)
class StageRecord:
    """What every completed stage records."""

    stage: str
    run_dir: str
    seconds: float
    baseline_loss: float  # before the stage (the base alone, for merge)
    final_loss: float
    threads: int | None = None
    status: str = "complete"
    finished: str = field(default_factory=utc_now)
    kept: bool = False  # complete before this command (lora run --resume), not run again

    def entry(self) -> dict[str, Any]:
        """The manifest's stages.<name>."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_IN_ENTRY}

    def to_json(self) -> dict[str, Any]:
        """`--json`: the entry with where it is, and the logged points of a training stage."""
        data = dataclasses.asdict(self)
        if not self.kept:
            data.pop("kept")
        return data


@dataclass(kw_only=True)
class TrainingRecord(StageRecord):
    parameters: Parameters
    history: list[dict[str, Any]] = field(default_factory=list)  # the stage's metrics.jsonl lines
    final_test_loss: float | None = None  # the MSE on data.n_test held-out rows at the end (None: no test rows)
    final_source_loss: float | None = None  # a finetune's MSE on fresh rows of the pretraining task at the end: forgetting
    frontier: dict[str, Any] | None = None  # finetune.frontier: lambdas, rank and full [[L_t, F]…], base and trained [L_t, F]
    decay: dict[str, Any] | None = None  # finetune.weight_decay > 0: the trained and optimal penalised objectives (recipes/pipeline.decay_of)


@dataclass(kw_only=True)
class PretrainRecord(TrainingRecord):
    engine: str
    device: str
    resumed_from_epoch: int | None = None
    optimal_loss: float | None = None  # the best any allowed update reaches on this data (None: not computed)
    gap: float | None = None  # final_loss − optimal_loss
    optimum_seconds: float | None = None  # computing the optimum, apart from `seconds` of training


@dataclass(kw_only=True)
class FinetuneRecord(PretrainRecord):
    rank: int
    alpha: float
    scaling: float
    init: str
    scaling_rule: str = "standard"
    lr_ratio: float = 1.0  # LoRA+: lora_B's learning rate over lora_A's
    method: str = "lora"  # an entry of methods/registry.METHODS
    init_reads: str | None = None  # what a data-aware init read (methods/inits.InitData): gradient, target_inputs or source_inputs
    init_rows: int | None = None  # ... on how many rows (all of the split's training rows)
    seed: int  # of the adapter init and the batches
    base_sha256: str  # the base it was trained on; merge refuses any other
    population_optimal_loss: float | None = None  # the best rank-r update's expected loss on fresh data
    subspace: Subspace | None = None  # core.subspace.Diagnostics of ΔW (None: finetune.subspace off)
    subspace_seconds: float | None = None  # computing `subspace`, apart from training and the optimum


@dataclass(kw_only=True)
class MergeRecord(StageRecord):
    adapter_loss: float
    max_abs_diff: float  # max |merged(x) − adapter(x)| over the shifted data
    test_loss: float | None = None  # the merged weight's MSE on the finetune split's held-out rows
    source_loss: float | None = None  # ... on fresh rows of the pretraining task (source inputs, the original θ)
    delta_mean: float
    delta_std: float | None  # None for a 1 x 1 ΔW: the sample std of one number is undefined
    delta_corner: list[list[float]]  # Δθ[:5, :5], the blog's layout (d_in, d_out)
    subspace: Subspace | None = None  # as FinetuneRecord's, from the merged weight (the run's own adapter: the finetune's)
    subspace_seconds: float | None = None
    adapter_source: AdapterSource | None = None  # an imported PEFT folder (path, sha256, r, …); None: the run's own


@dataclass(kw_only=True)
class ApproxRecord(TrainingRecord):
    optimal_loss: float  # Eckart–Young: the best any rank-r product can do
    gap: float
    gap_relative: float | None
    singular_values: list[float]
    rank: int
    iterations: int


RECORDS: dict[str, type[StageRecord]] = {
    "pretrain": PretrainRecord,
    "finetune": FinetuneRecord,
    "merge": MergeRecord,
    "approx": ApproxRecord,
}


def load(run: Any, stage: str, kept: bool = False) -> StageRecord:
    """A completed stage's record, rebuilt from the run folder's manifest and metrics and
    checked against its type; RunError (damaged, with the folder's repair) when it is not one."""
    cls = RECORDS[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    stored = run.stage(stage)
    entry = _upgraded({k: v for k, v in stored.items() if k in names}, stored, names)
    if "history" in names:
        entry["history"] = [row for row in run.metrics() if row["stage"] == stage]
    from pydantic import ValidationError

    try:
        return _validator(cls).validate_python({**entry, "stage": stage, "run_dir": str(run.path), "kept": kept})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise DamageError(f"{run.path / MANIFEST}: stages.{stage}.{where} is damaged ({error['msg'].lower()})", run.fix()) from None


def _upgraded(entry: dict[str, Any], stored: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A record written before methods said DoRA with a flag (`dora: true`, in a finetune's
    record or in a merge's imported adapter source): read it as the method."""
    if "method" in names and "method" not in stored and stored.get("dora") is True:
        entry["method"] = "dora"
        if isinstance(entry.get("parameters"), dict):
            entry["parameters"] = {**entry["parameters"], "method": "dora"}
    source = entry.get("adapter_source")
    if isinstance(source, dict) and "method" not in source and "dora" in source:
        entry["adapter_source"] = {**source, "method": "dora" if source["dora"] is True else "lora"}
    return entry


def problem(run: Any, stage: str) -> str | None:
    """Why a complete stage cannot be kept as it is (a damaged file, metrics rows or record), or None."""
    try:
        load(run, stage)
    except DamageError as exc:
        return exc.problem
    stored = run.stage(stage)
    fields = {f.name for f in dataclasses.fields(RECORDS[stage])} - set(_NOT_IN_ENTRY) | set(_LEGACY)
    expected = stored.get("record_sha256")  # absent in folders written before it was recorded
    if expected is not None and entry_digest({k: v for k, v in stored.items() if k in fields}) != expected:
        return f"{run.path / MANIFEST}: stages.{stage} was changed after the stage recorded it"
    return run.damage(stage)


def entry_digest(entry: dict[str, Any]) -> str:
    """SHA-256 of a stage's manifest entry as JSON with sorted keys (recorded as the stage
    completes; resume checks the record against it)."""
    canonical = json.dumps(json.loads(dumps(entry)), sort_keys=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def _validator(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)
