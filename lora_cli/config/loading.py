"""Typed experiment configuration: defaults in code, YAML and overrides on top.

`load_config` is the only way in: it merges a YAML file and `section.key=value` overrides over
the defaults, validates every value once with the pydantic schemas (schemas.py), and returns a
frozen model. Code that receives a config never re-checks it. Errors are worded by problems.py.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lora_cli.config.overrides import Override
from lora_cli.config.problems import worded
from lora_cli.config.schemas import RENAMED, SCHEMAS, ApproxConfig, Config, Section, renamed_value
from lora_cli.config.yamlio import YamlError, dump_yaml, read_yaml_file
from lora_cli.errors import ConfigError

__all__ = ["ApproxConfig", "Config", "load_config", "check_values", "detect_schema", "describe_schema"]


def load_config(
    path: Path | None = None,
    overrides: list[Override] | None = None,
    base: dict[str, Any] | None = None,
    schema: type[Section] = Config,
) -> Any:
    """Resolve a config from defaults, an optional base dict, a YAML file and overrides.

    Args:
        path: YAML file, or None for the built-in defaults (the blog recipe).
        overrides: (source, dotted key, value) triples applied last, e.g.
            ("--set", "adapter.rank", 4) or ("--rank", "adapter.rank", 4).
        base: an already resolved config dict (from a run folder) to start from.
        schema: the config model, Config (the pipeline) or ApproxConfig.
    Returns:
        A frozen, fully valid instance of `schema`.
    Raises:
        ConfigError: every problem found, each naming its source, key and allowed values.
    """
    raw: dict[str, Any] = _deep_copy(base) if base is not None else {}
    sources: dict[str, str] = {}
    if path is not None:
        doc = read_mapping(path)
        _refuse_other_kind(path, doc, schema)
        _merge(raw, _upgrade(doc, str(path)), sources, str(path), prefix="")
        raw.setdefault("name", _default_name(path))
    for source, key, value in overrides or []:
        _apply_override(raw, sources, source, key, value)
    return _validate(schema, raw, sources, relations=True)


def check_values(overrides: list[Override], schema: type[Section] = Config) -> None:
    """Check each override's key, type and range on its own, before a run folder is opened:
    rules that span keys need the run's config and are checked when it is loaded.

    Raises:
        ConfigError: every problem found, worded as `load_config` words it.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, key, value in overrides:
        _apply_override(raw, sources, source, key, value)
    _validate(schema, raw, sources, relations=False)


def detect_schema(path: Path) -> type[Section]:
    """ApproxConfig when the file's top-level keys belong to `lora approx`, else Config."""
    return ApproxConfig if file_kind(read_mapping(path)) == "approx" else Config


SWEEP_KEYS = ("grid", "zip", "seeds", "base")  # any of these at the top level makes a file a sweep spec
RUNS_WITH = {"pipeline": "lora run {path}", "approx": "lora approx -c {path}", "sweep": "lora sweep {path}"}


def file_kind(doc: dict[str, Any]) -> str:
    """"sweep", "approx" or "pipeline": what a config file is, told by its top-level keys."""
    if set(doc) & set(SWEEP_KEYS):
        return "sweep"
    approx_only = set(ApproxConfig.model_fields) - set(Config.model_fields)
    pipeline_only = set(Config.model_fields) - set(ApproxConfig.model_fields)
    return "approx" if approx_only & set(doc) and not pipeline_only & set(doc) else "pipeline"


def _refuse_other_kind(path: Path, doc: dict[str, Any], schema: type[Section]) -> None:
    kind, wanted = file_kind(doc), next(name for name, cls in SCHEMAS.items() if cls is schema)
    if kind != wanted:
        article = {"approx": "an", "pipeline": "a", "sweep": "a"}
        raise ConfigError(
            f"{path}: is {article[kind]} {kind} {'spec' if kind == 'sweep' else 'config'}, not {article[wanted]} {wanted} config; "
            f"run it with `{RUNS_WITH[kind].format(path=path)}`"
        )


def config_to_yaml(cfg: Section, header: str = "") -> str:
    return dump_yaml(cfg.to_dict(), header)


def describe_schema(schema: type[Section] = Config) -> list[tuple[str, str, Any, str]]:
    """Rows (key, type, default, help) for every config key, for docs and `lora validate`."""
    return list(_walk(schema, ""))


# ---- internals -------------------------------------------------------------


def _validate(schema: type[Section], raw: dict[str, Any], sources: dict[str, str], relations: bool) -> Any:
    try:
        return schema.model_validate(raw, context={"relations": relations})
    except ValidationError as exc:
        raise ConfigError(worded(schema, exc, sources)) from None


def _walk(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, f"{prefix}{name}.")
        else:
            default = field.get_default(call_default_factory=True)
            yield f"{prefix}{name}", _type_name(annotation), default, field.description or ""


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "str"
    args = typing.get_args(annotation)
    if args:
        return " | ".join("None" if a is type(None) else a.__name__ for a in args)
    return annotation.__name__


def read_mapping(path: Path) -> dict[str, Any]:
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


def _upgrade(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """A file's renamed keys moved to their new names (configs and run folders written before)."""
    for old, new in RENAMED.items():
        (old_section, leaf), (new_section, new_leaf) = old.split("."), new.split(".")
        section = doc.get(old_section)
        if isinstance(section, dict) and leaf in section:
            target = doc.setdefault(new_section, {})
            if not isinstance(target, dict):
                continue  # the schema says what is wrong with it
            if new_leaf in target:
                raise ConfigError(f"{where}: {old} and {new} are both set; keep {new} ({old} is its old name)")
            target[new_leaf] = renamed_value(old, section.pop(leaf))
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
    if key in RENAMED:
        value, key = renamed_value(key, value), RENAMED[key]
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    _note_source(sources, key, source)
