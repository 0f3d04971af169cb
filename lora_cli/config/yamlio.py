"""Strict YAML reading and writing for configs.

PyYAML follows YAML 1.1, where `1e-3` is a string; people mean a number, so the
loader resolves floats as YAML 1.2 does. Duplicate keys and aliases are refused
(a repeated key silently wins in PyYAML; aliases allow exponential "bombs").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


CONFIG_LIMIT = 2**20  # a config or sweep spec is a few kilobytes


class YamlError(Exception):
    """Unreadable or invalid YAML; the message names the place."""


class _StrictLoader(yaml.SafeLoader):
    pass


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})", key_node.start_mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _NoAliasComposer(_StrictLoader):
    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in configs", event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text; `where` names the source in error messages."""
    try:
        return yaml.load(text, Loader=_NoAliasComposer)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())  # one line, whatever PyYAML wrapped
        raise YamlError(f"{where}: not valid YAML{at}: {problem}") from None


def read_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file, with errors that say what to do."""
    if not path.exists():
        raise YamlError(f"{path}: no such file; the shipped configs are in configs/")
    if path.is_dir():
        raise YamlError(f"{path}: is a folder, not a YAML file")
    from lora_cli.store.files import read_small

    try:
        data = read_small(path, CONFIG_LIMIT)
    except OSError as exc:
        raise YamlError(f"{path}: cannot be read as a config ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise YamlError(f"{path}: looks like a binary file, not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: is not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_yaml(text, where=str(path))


def dump_yaml(data: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body
