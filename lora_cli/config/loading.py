"""Typed experiment configuration: defaults in code, YAML and overrides on top.

`load_config` is the only way in: it merges a YAML file and `section.key=value`
overrides over the defaults, checks every value once, and returns a frozen
`Config`. Code that receives a `Config` never re-checks it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_cli.config.checks import build, build_into, section_classes
from lora_cli.errors import ConfigError
from lora_cli.config.yamlio import YamlError, dump_yaml, parse_yaml, read_yaml_file


def _spec(default: Any, help: str, **rules: Any) -> Any:
    """A schema field: its default, one line of help, and its rules (min, gt, choices)."""
    return field(default=default, metadata={"help": help, **rules})


@dataclass(frozen=True)
class DataConfig:
    n: int = _spec(10000, "rows of X (and of X2 for the finetune data)", min=1)
    d_in: int = _spec(1001, "input features: columns of X, rows of θ", min=1)
    d_out: int = _spec(1000, "outputs: columns of θ and of y", min=1)
    noise_std: float = _spec(0.0, "std of Gaussian noise added to y", min=0.0)


@dataclass(frozen=True)
class ShiftConfig:
    kind: str = _spec("add", "how θ changes between pretraining and finetuning", choices=("add",))
    value: float = _spec(1.0, "add: θ2 = θ + value (a rank-1 change)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _spec(100, "passes; each has n // batch_size steps", min=1)
    batch_size: int = _spec(128, "distinct random rows per step", min=1)
    lr: float = _spec(1e-3, "Adam learning rate", gt=0.0)
    log_every: int = _spec(10, "full-data MSE every this many epochs (and at the end)", min=1)
    checkpoint_every: int = _spec(10, "save a resumable checkpoint every this many epochs (0 = never)", min=0)


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    # rank's bounds depend on data.d_in/d_out, so relation_problems checks both ends.
    rank: int = _spec(1, "LoRA rank r: lora_A is r x d_in, lora_B is d_out x r")
    alpha: float = _spec(1.0, "LoRA alpha; scaling = alpha / rank", gt=0.0)
    init: str = _spec(
        "gaussian",
        "lora_A init: gaussian = N(0, 1) as in the blog, kaiming = PEFT's default",
        choices=("gaussian", "kaiming"),
    )
    seed: int | None = _spec(None, "seeds the adapter init and the batches (null: the top-level seed)", min=0)


@dataclass(frozen=True)
class Config:
    name: str = _spec("posit", "run-folder prefix: runs/<name>-<UTC time>")
    seed: int = _spec(0, "seeds the data, the base and its batches (and the adapter unless finetune.seed is set)", min=0)
    data: DataConfig = field(default_factory=DataConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def relation_problems(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(key, problem, the other keys the rule reads) for rules that span keys; checked
        after every key is valid on its own."""
        d = self.data
        problems = [("finetune.rank", _rank_problem(self.finetune.rank, d.d_in, d.d_out), ("data.d_in", "data.d_out"))]
        for stage in ("pretrain", "finetune"):
            batch = getattr(self, stage).batch_size
            if batch > d.n:
                problems.append((f"{stage}.batch_size", f"is out of range: must be ≤ data.n = {d.n} (each step draws distinct rows)", ("data.n",)))
        return [p for p in problems if p[1]]


@dataclass(frozen=True)
class ApproxConfig:
    """`lora approx`: fit A (d_in x r) · B (r x d_out) to a random target W by Adam on MSE."""

    name: str = _spec("approx", "run-folder prefix: runs/<name>-<UTC time>")
    seed: int = _spec(42, "torch.manual_seed(seed), then W, then A, from one stream", min=0)
    d_in: int = _spec(8, "d: rows of W and of A", min=1)
    d_out: int = _spec(8, "k: columns of W and of B", min=1)
    rank: int = _spec(2, "r: A is d x r, B is r x k")
    iterations: int = _spec(1000, "Adam steps on MSE(A·B, W)", min=1)
    lr: float = _spec(0.01, "Adam learning rate", gt=0.0)
    log_every: int = _spec(100, "log the loss every this many iterations", min=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def relation_problems(self) -> list[tuple[str, str, tuple[str, ...]]]:
        problem = _rank_problem(self.rank, self.d_in, self.d_out)
        return [("rank", problem, ("d_in", "d_out"))] if problem else []


def _rank_problem(rank: int, d_in: int, d_out: int) -> str:
    limit = min(d_in, d_out)
    return "" if 1 <= rank <= limit else f"is out of range: must be 1 ≤ rank ≤ min(d_in, d_out) = {limit}"


def load_config(
    path: Path | None = None,
    overrides: list[tuple[str, str, Any]] | None = None,
    base: dict[str, Any] | None = None,
    schema: type = Config,
) -> Any:
    """Resolve a config from defaults, an optional base dict, a YAML file and overrides.

    Args:
        path: YAML file, or None for the built-in defaults (the blog recipe).
        overrides: (source, dotted key, value) triples applied last, e.g.
            ("--set", "finetune.rank", 4) or ("--rank", "finetune.rank", 4).
        base: an already resolved config dict (from a run folder) to start from.
        schema: the config class, Config (the pipeline) or ApproxConfig.
    Returns:
        A frozen, fully valid instance of `schema`.
    Raises:
        ConfigError: every problem found, each naming its source, key and allowed values.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if base is not None:
        raw = _deep_copy(base)
    if path is not None:
        doc = _read_mapping(path)
        _merge(raw, doc, sources, str(path), prefix="")
        raw.setdefault("name", _default_name(path))
    for source, key, value in overrides or []:
        _apply_override(raw, sources, source, key, value)
    return build(schema, raw, sources, prefix="")


def check_values(overrides: list[tuple[str, str, Any]], schema: type = Config) -> None:
    """Check each override's key, type and range on its own, before a run folder is opened:
    rules that span keys need the run's config and are checked when it is loaded.

    Raises:
        ConfigError: every problem found, worded as `load_config` words it.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, key, value in overrides:
        _apply_override(raw, sources, source, key, value)
    problems: list[str] = []
    build_into(schema, raw, sources, "", problems)
    if problems:
        raise ConfigError(problems)


def detect_schema(path: Path) -> type:
    """ApproxConfig when the file's top-level keys belong to `lora approx`, else Config."""
    doc = _read_mapping(path)
    approx_only = {f.name for f in dataclasses.fields(ApproxConfig)} - {f.name for f in dataclasses.fields(Config)}
    return ApproxConfig if approx_only & set(doc) else Config


def parse_set_option(text: str) -> tuple[str, Any]:
    """Split one `--set section.key=value` into (key, parsed value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set finetune.rank=4")
    return key, parse_scalar(value, f"--set {key}")


def parse_scalar(text: str, where: str) -> Any:
    """One value typed on the command line, read as YAML 1.2 reads it (4, 4.0, 1e-3, kaiming);
    the schema then checks its type and range, so every flag shares one rule and one wording."""
    try:
        parsed = parse_yaml(text, where=where)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(parsed, (dict, list)):
        raise ConfigError(f"{where}: value {text!r} must be a single number or word")
    return parsed


def config_to_yaml(cfg: Any, header: str = "") -> str:
    return dump_yaml(cfg.to_dict(), header)


def describe_schema(schema: type = Config) -> list[tuple[str, str, Any, str]]:
    """Rows (key, type, default, help) for every config key, for docs and `--help`."""
    rows = []
    for key, f, owner in _walk_fields(schema, ""):
        rows.append((key, f.type, getattr(owner(), f.name), f.metadata.get("help", "")))
    return rows


# ---- internals -------------------------------------------------------------


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        doc = read_yaml_file(path)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if doc is None:
        raise ConfigError(f"{path}: the file is empty; start from configs/posit.yaml")
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        raise ConfigError(f"{path}: expected a mapping of sections (data:, pretrain:, …), found a {kind}")
    return doc


def _default_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).lstrip("-_.")
    return stem or "run"


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _merge(raw: dict, doc: dict, sources: dict, source: str, prefix: str) -> None:
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            node = raw.setdefault(key, {})
            if isinstance(node, dict):
                _merge(node, value, sources, source, dotted + ".")
                continue
        raw[key] = value
        _note_source(sources, dotted, source)


def _note_source(sources: dict[str, str], dotted: str, source: str) -> None:
    sources.pop(dotted, None)  # re-inserted, so the dict's order is the order values were set
    sources[dotted] = source


def _apply_override(raw: dict, sources: dict, source: str, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    _note_source(sources, key, source)


def _walk_fields(cls: type, prefix: str):
    sections = section_classes(cls)
    for f in dataclasses.fields(cls):
        if f.name in sections:
            yield from _walk_fields(sections[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, cls
