"""Sweep specs (`lora sweep`): one pipeline config and the axes to vary over it, expanded
into trials, every one of them checked before anything runs.

    name: rank-vs-shift           # sweep-folder prefix (default: the spec file's name)
    base: ../posit.yaml           # the pipeline config varied (relative to this file; default: built in)
    config: {finetune: {epochs: 50}}   # keys set on top of base, as in a config file
    grid: {adapter.rank: [1, 2, 4, 8], shift.rank: [1, 4]}    # every combination
    zip: [{adapter.alpha: 1, adapter.scaling: standard}, {adapter.alpha: 8, adapter.scaling: rslora}]  # together
    seeds: [0, 1, 2]              # the top-level seed as one more axis
    plot: {x: finetune.n, loss: test, columns: [optimum_column_angle]}  # the loss figure's x axis and
                                  # losses (default: rank, train); results.csv columns the table adds

Trials are the product grid × zip × seeds, in that order. Every problem is reported at once:
each axis value checked on its own (named by its axis), then each trial's whole config (named
by its trial id), then trials that resolve to the same config.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field

from lora_cli.config.loading import file_kind, read_mapping, check_values, load_config
from lora_cli.config.schemas import NAME_PATTERN, RENAMED, Config, Section, renamed_value
from lora_cli.errors import ConfigError

Scalar = Union[bool, int, float, str]


class PlotSpec(Section):
    """What sweep_rank.png draws (along which axis, which losses beside which optimum) and which
    more of results.csv's columns the table shows."""

    x: str | None = Field(None, description="the swept key along the x axis (null: adapter.rank when swept, else the first axis)")
    loss: Literal["train", "test"] = Field("train", description="train = final loss beside the best on this data; "
                                           "test = held-out test loss beside the best expected on fresh data")
    columns: list[str] = Field(default_factory=list, description="results.csv columns the sweep table shows too, e.g. optimum_column_angle")


class SweepSpec(Section):
    """`lora sweep`: a pipeline config and the axes varied over it (grid × zip × seeds)."""

    name: str | None = Field(None, pattern=NAME_PATTERN, description="sweep-folder prefix: runs/<name>-sweep-<UTC time> (default: the file's name)")
    base: str | None = Field(None, description="the pipeline config file varied, relative to this file (null: the built-in blog recipe)")
    config: dict[str, Any] = Field(default_factory=dict, description="pipeline keys set on top of base, nested as in a config file")
    grid: dict[str, list[Scalar]] = Field(default_factory=dict, description="dotted key -> values; trials take every combination")
    zip: list[dict[str, Scalar]] = Field(default_factory=list, description="points whose keys vary together; each entry has the same keys")
    seeds: list[int] = Field(default_factory=list, description="values of the top-level seed, one more axis (data, base and adapter)")
    plot: PlotSpec = Field(default_factory=PlotSpec, description="what the loss figure draws")


@dataclass(frozen=True)
class Trial:
    id: str  # readable and unique: the folder name under trials/
    values: dict[str, Any]  # axis key -> value
    config: Config


@dataclass(frozen=True)
class Sweep:
    name: str
    base: Config
    axes: tuple[str, ...]
    trials: tuple[Trial, ...]
    spec: dict[str, Any]  # self-contained: the base config embedded; expands to the same trials
    plot: PlotSpec = PlotSpec()

    def grid(self) -> list[dict[str, Any]]:
        """The expanded trials as data (grid.json): id, axis values, whole config."""
        return [{"id": t.id, "values": t.values, "config": t.config.to_dict()} for t in self.trials]


def is_sweep_file(path: Path) -> bool:
    return file_kind(read_mapping(path)) == "sweep"


def load_sweep(path: Path, grid: list[tuple[str, list[Any]]] = (), sets: list[tuple[str, str, Any]] = (), stored: bool = False,
               zip_points: list[dict[str, Any]] | None = None, seeds: list[int] | None = None) -> Sweep:
    """A sweep from a spec file, or from a pipeline config file and `grid` axes (--grid);
    `sets` (--set) apply to the base config; `zip_points` (--zip) and `seeds` (--seeds), when
    given, replace the spec's zip: and seeds:. ConfigError lists every problem found, among them
    a key set that an axis also sweeps (not for a sweep folder's own `stored` spec, which
    embeds its whole base config: before this was checked, swept keys included)."""
    if is_sweep_file(path):
        spec = _validate_spec(path)
        base_path = (path.parent / spec.base) if spec.base else None
        name = spec.name or _stem(path)
    else:
        spec, base_path, name = SweepSpec(), path, _stem(path)
    replaced = {key: value for key, value in (("zip", zip_points), ("seeds", seeds)) if value is not None}
    spec = spec.model_copy(update=replaced) if replaced else spec
    extra = [(f"{path}: config", key, value) for key, value in _flatten(spec.config)]
    base = load_config(base_path, [*extra, *sets])
    axes = _axes(spec, grid, str(path))
    swept = {key for keys, _ in axes for key in keys}
    fixed = [f"{source}: {key} is swept by the grid, so a value here would be ignored; leave it out"
             for source, key, _ in [*extra, *sets] if RENAMED.get(key, key) in swept]
    if fixed and not stored:
        raise ConfigError(fixed)
    embedded = _without(base.to_dict(), swept)  # the spec it stores runs again as it is
    plot = spec.plot.to_dict() if spec.plot != PlotSpec() else None
    own = {"name": name, "config": embedded, "grid": {**spec.grid, **dict(grid)}, "zip": spec.zip, "seeds": spec.seeds, "plot": plot}
    own = {key: value for key, value in own.items() if value}
    keys = tuple(key for names, _ in axes for key in names)
    if spec.plot.x is not None and RENAMED.get(spec.plot.x, spec.plot.x) not in keys:
        raise ConfigError(f"{path}: plot.x is {spec.plot.x}, which no axis sweeps; name one of {', '.join(keys)}")
    _check_columns(spec.plot.columns, path)
    plot_spec = spec.plot.model_copy(update={"x": RENAMED.get(spec.plot.x, spec.plot.x)}) if spec.plot.x else spec.plot
    return Sweep(name, base, keys, tuple(_trials(base, axes, str(path))), own, plot_spec)


def _check_columns(columns: list[str], path: Path) -> None:
    from lora_cli.stages.result_rows import TABLE_COLUMNS  # the results' schema, read when a spec names columns

    unknown = [c for c in columns if c not in TABLE_COLUMNS]
    if unknown:
        raise ConfigError(f"{path}: plot.columns names {', '.join(unknown)}, not a column of results.csv; choose from {', '.join(TABLE_COLUMNS)}")


def _validate_spec(path: Path) -> SweepSpec:
    from pydantic import ValidationError

    doc = read_mapping(path)
    try:
        return SweepSpec.model_validate(doc)
    except ValidationError as exc:
        from lora_cli.config.problems import worded

        raise ConfigError(worded(SweepSpec, exc, {key: str(path) for key in doc})) from None


def _stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).lstrip("-_.") or "sweep"


def _without(config: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """`config` (nested) without the dotted `keys`."""
    for key in keys:
        *sections, leaf = key.split(".")
        node = config
        for part in sections:
            node = node.get(part, {})
        node.pop(leaf, None)
    return config


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in mapping.items():
        out.extend(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)])
    return out


Axis = tuple[tuple[str, ...], list[tuple[Any, ...]]]  # (keys, points): a grid axis has one key, zip several


def _axes(spec: SweepSpec, grid: list[tuple[str, list[Any]]], where: str) -> list[Axis]:
    """The axes in order, keys upgraded to their current names; every bad name, value, repeat
    and clash reported at once."""
    problems: list[str] = []
    axes: list[Axis] = []
    for source, key, values in [*((f"{where}: grid", k, v) for k, v in spec.grid.items()), *(("--grid", k, v) for k, v in grid)]:
        if not key.strip():
            problems.append(f"{source}: a key is empty; name the config key to sweep, e.g. adapter.rank")
            continue
        axes.append(((RENAMED.get(key, key),), [(renamed_value(key, v),) for v in values]))
        problems += _check_values(source, key, values)
    if spec.zip:
        keys = tuple(spec.zip[0])
        for i, point in enumerate(spec.zip):
            if tuple(point) != keys:
                problems.append(f"{where}: zip[{i}] sets {', '.join(point) or 'nothing'}; every zip entry must set {', '.join(keys)}")
        axes.append((tuple(RENAMED.get(k, k) for k in keys), [tuple(renamed_value(k, p.get(k)) for k in keys) for p in spec.zip]))
        problems += [line for i, point in enumerate(spec.zip) for line in _check_values(f"{where}: zip[{i}]", "", list(point.items()))]
    if spec.seeds:
        axes.append((("seed",), [(s,) for s in spec.seeds]))
        problems += _check_values(f"{where}: seeds", "seed", spec.seeds)
    seen: dict[str, int] = {}
    for keys, _ in axes:
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    problems += [f"{where}: {key} is swept by more than one axis; sweep each key once" for key, count in seen.items() if count > 1]
    if not axes and not problems:
        problems.append(f"{where}: nothing to sweep; give grid:, zip: or seeds: (or --grid KEY=V1,V2)")
    if problems:
        raise ConfigError(problems)
    return axes


def _check_values(source: str, key: str, values: list[Any]) -> list[str]:
    """Problems with one axis's values, each checked on its own (key "" = (key, value) pairs)."""
    pairs = values if not key else [(key, v) for v in values]
    problems = []
    if not pairs:
        problems.append(f"{source}: {key} has no values; give at least one" if key else f"{source}: sets no keys; give each entry the keys it varies")
    if key and len(set(map(repr, values))) < len(values):
        problems.append(f"{source}: {key} lists a value more than once")
    for k, v in pairs:
        try:
            check_values([(source, k, v)])
        except ConfigError as exc:
            problems += exc.problems
    return problems


def _trials(base: Config, axes: list[Axis], where: str) -> list[Trial]:
    names = labels([key for keys, _ in axes for key in keys])
    trials, problems, seen = [], [], {}
    for i, combo in enumerate(itertools.product(*(points for _, points in axes))):
        values = {key: v for (keys, _), point in zip(axes, combo) for key, v in zip(keys, point)}
        trial_id = f"{i:03d}-" + "_".join(f"{names[k]}-{_slug(v)}" for k, v in values.items())
        try:
            cfg = load_config(base=base.to_dict(), overrides=[(f"{where}: trial {trial_id}", k, v) for k, v in values.items()])
        except ConfigError as exc:
            problems += exc.problems
            continue
        key = repr(cfg.to_dict())
        if key in seen:
            problems.append(f"{where}: trials {seen[key]} and {trial_id} are the same config; drop one of the values")
        seen.setdefault(key, trial_id)
        trials.append(Trial(trial_id, values, cfg))
    if problems:
        raise ConfigError(problems)
    return trials


def labels(keys: list[str]) -> dict[str, str]:
    """Each key's last part, or the whole key where two keys share a last part (adapter.rank, shift.rank)."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def _slug(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else (f"{value:g}" if isinstance(value, float) else str(value))
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)
