"""Checking a raw config mapping against a schema: unknown keys, types, ranges, choices, and
rules that span keys. Every problem is one line naming its source (file or flag), the dotted
key, the value and what is allowed. `lora_cli.config.loading.load_config` is the way in.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

from lora_cli.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def section_classes(cls: type) -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.default_factory)}


def build(cls: type, raw: Any, sources: dict[str, str], prefix: str) -> Any:
    problems: list[str] = []
    result = build_into(cls, raw, sources, prefix, problems)
    if not problems:
        problems = _check_relations(result, sources)
    if problems:
        raise ConfigError(problems)
    return result


def build_into(cls: type, raw: Any, sources: dict, prefix: str, problems: list[str]) -> Any:
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        where = sources.get(prefix.rstrip("."), "config")
        problems.append(f"{where}: {section} must be a mapping of keys, found {raw!r}")
        return cls()
    sections = section_classes(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            dotted = f"{prefix}{key}"
            hint = difflib.get_close_matches(str(key), names, n=1)
            did_you_mean = f"; did you mean {prefix}{hint[0]}?" if hint else ""
            problems.append(
                f"{_source(sources, dotted)}: unknown key {dotted}{did_you_mean} "
                f"(keys in {section}: {', '.join(names)})"
            )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        dotted = f"{prefix}{f.name}"
        if f.name in sections:
            values[f.name] = build_into(sections[f.name], raw[f.name], sources, dotted + ".", problems)
        else:
            problem = _check_value(f, raw[f.name])
            if problem:
                problems.append(f"{_source(sources, dotted)}: {dotted} = {raw[f.name]!r} {problem}")
            else:
                values[f.name] = float(raw[f.name]) if f.type == "float" else raw[f.name]
    return cls(**values)


def _source(sources: dict[str, str], dotted: str) -> str:
    while dotted:
        if dotted in sources:
            return sources[dotted]
        dotted = dotted.rpartition(".")[0]
    return "config"


def _check_value(f: dataclasses.Field, value: Any) -> str | None:
    meta = f.metadata
    kind = f.type.removesuffix(" | None")
    if value is None and kind != f.type:
        return None  # an optional key left unset
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"is not allowed: must be a whole number{_range_text(meta)}"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"is not allowed: must be a finite number{_range_text(meta)}"
    elif kind == "str":
        if not isinstance(value, str):
            return f"is not allowed: must be text{_choices_text(meta)}"
        if "choices" in meta and value not in meta["choices"]:
            return f"is not allowed: must be {_choices_text(meta).strip()[1:-1]}"
        if f.name == "name" and not _NAME_RE.match(value):
            return "is not allowed: use 1-64 letters, digits, '.', '_' or '-'"
        return None
    if "min" in meta and value < meta["min"] or "gt" in meta and value <= meta["gt"]:
        return f"is out of range: must be{_range_text(meta)}"
    if abs(value) > 1e15:
        return "is out of range: must be at most 1e15 in size"
    return None


def _range_text(meta: dict) -> str:
    if "min" in meta:
        return f" ≥ {meta['min']}"
    if "gt" in meta:
        return f" > {meta['gt']}"
    return ""


def _choices_text(meta: dict) -> str:
    return f" (one of {', '.join(meta['choices'])})" if "choices" in meta else ""


def _check_relations(cfg: Any, sources: dict[str, str]) -> list[str]:
    """One line per broken rule, blamed on whichever of its keys was set last (a --set of
    data.n that breaks the file's batch_size names the --set, not the file)."""
    order = list(sources)
    problems = []
    for key, problem, related in cfg.relation_problems():
        latest = max((key, *related), key=lambda k: order.index(k) if k in order else -1)
        problems.append(f"{_source(sources, latest)}: {key} = {_get(cfg, key)!r} {problem}")
    return problems


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
