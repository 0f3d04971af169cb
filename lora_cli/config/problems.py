"""pydantic's validation errors, worded for people: one line each, naming the source (file or
flag), the dotted key, the value and what is allowed, e.g.

    configs/x.yaml: pretrain.lr = 0.0 is out of range: must be > 0.0
    --set: unknown key adapter.rnak; did you mean adapter.rank? (keys in adapter: …)
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from lora_cli.config.schemas import LIMIT, RELATIONS, RENAMED, WHY, Section

_TYPE_ERRORS = {"int_type", "float_type", "string_type", "finite_number", "literal_error", "int_from_float", "none_required"}
_RANGE_ERRORS = {"greater_than_equal": "≥ {ge}", "greater_than": "> {gt}", "less_than_equal": "≤ {le}", "less_than": "< {lt}"}


UNION_MEMBERS = {"bool", "int", "float", "str"}  # pydantic names each member of a union in the error's location


def worded(schema: type[Section], error: ValidationError, sources: dict[str, str]) -> list[str]:
    """One line per problem in `error`, in the order pydantic found them (a value no member of
    a union takes is one problem, not one per member)."""
    lines, seen_unions = [], set()
    for item in error.errors():
        if item["type"] == RELATIONS:
            lines.extend(_relation(rule, sources) for rule in item["ctx"]["broken"])
        elif item["loc"] and item["loc"][-1] in UNION_MEMBERS:
            where = tuple(item["loc"][:-1])
            if where not in seen_unions:
                seen_unions.add(where)
                dotted = ".".join(map(str, where))
                lines.append(f"{source_of(sources, dotted)}: {dotted} = {shown(item['input'])} is not allowed: must be a number, true or false, or a word")
        else:
            lines.append(_field_problem(schema, item, sources))
    return lines


def shown(value: Any, limit: int = 60) -> str:
    """A bad value as it was given (repr), cut short: an error line is never 100 KB."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def source_of(sources: dict[str, str], dotted: str) -> str:
    """Where `dotted` (or the section holding it) was last set; "config" for a default."""
    below = [source for key, source in sources.items() if key.startswith(f"{dotted}.")]  # a section set key by key
    while dotted:
        if dotted in sources:
            return sources[dotted]
        dotted = dotted.rpartition(".")[0]
    return below[-1] if below else "config"


def _field_problem(schema: type[Section], item: dict[str, Any], sources: dict[str, str]) -> str:
    loc = [str(part) for part in item["loc"]]
    dotted, kind, value = ".".join(loc), item["type"], shown(item["input"])
    where = source_of(sources, dotted)
    if kind == "extra_forbidden":
        return f"{where}: {_unknown_key(schema, loc)}"
    if kind in ("model_type", "dict_type"):
        return f"{where}: {dotted or 'the top level'} must be a mapping of keys, found {value}"
    field = _field(schema, loc)
    if kind == "string_pattern_mismatch":
        return f"{where}: {dotted} = {value} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    if kind in _RANGE_ERRORS:
        bound = _RANGE_ERRORS[kind].format(**{k: _number(v) for k, v in item["ctx"].items()})
        why = f" ({WHY[dotted]})" if dotted in WHY else ""
        return f"{where}: {dotted} = {value} is out of range: must be {bound}{why}"
    if kind in _TYPE_ERRORS and field is not None:
        return f"{where}: {dotted} = {value} is not allowed: must be {allowed(field)}"
    return f"{where}: {dotted} = {value} is not allowed: {item['msg']}"


def allowed(field: FieldInfo) -> str:
    """What a key accepts, in words: "a whole number ≥ 1", "one of add", "text"."""
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    base = args[0] if args else annotation
    words = {int: "a whole number", float: "a finite number", str: "text", bool: "true or false"}.get(base, str(base))
    lower = next((m for m in field.metadata if hasattr(m, "ge") or hasattr(m, "gt")), None)
    if lower is not None and getattr(lower, "ge", None) is not None and lower.ge > -LIMIT:  # -LIMIT: no lower bound
        words += f" ≥ {_number(lower.ge)}"
    elif lower is not None and getattr(lower, "gt", None) is not None:
        words += f" > {_number(lower.gt)}"
    return words + (" or null" if type(None) in typing.get_args(annotation) else "")


def _unknown_key(schema: type[Section], loc: list[str]) -> str:
    owner = _section(schema, loc[:-1])
    names = list(owner.model_fields) if owner is not None else []
    prefix = "".join(f"{part}." for part in loc[:-1])
    # a key's old name in this section counts as a candidate, so finetune.rnak suggests adapter.rank
    candidates = {f"{prefix}{name}": f"{prefix}{name}" for name in names}
    candidates.update({old: new for old, new in RENAMED.items() if old.startswith(prefix) and old.count(".") == len(loc) - 1})
    hint = difflib.get_close_matches(f"{prefix}{loc[-1]}", list(candidates), n=1)
    did_you_mean = f"; did you mean {candidates[hint[0]]}?" if hint else ""
    section = prefix.rstrip(".") or "the top level"
    return f"unknown key {prefix}{loc[-1]}{did_you_mean} (keys in {section}: {', '.join(names)})"


def _section(schema: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    for part in path:
        field = schema.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        schema = field.annotation
    return schema


def _field(schema: type[BaseModel], loc: list[str]) -> FieldInfo | None:
    owner = _section(schema, loc[:-1])
    return owner.model_fields.get(loc[-1]) if owner is not None and loc else None


def _relation(rule: tuple[str, Any, str, tuple[str, ...]], sources: dict[str, str]) -> str:
    """A rule that spans keys is blamed on whichever of its keys was set last (a --set of data.n
    that breaks the file's batch_size names the --set, not the file)."""
    key, value, problem, related = rule
    order = list(sources)
    latest = max((key, *related), key=lambda k: order.index(k) if k in order else -1)
    return f"{source_of(sources, latest)}: {key} = {value!r} {problem}"


def _number(value: Any) -> str:
    return f"{value:.0e}".replace("e+", "e") if isinstance(value, (int, float)) and abs(value) >= 1e6 else repr(value)
