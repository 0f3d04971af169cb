"""Values typed on the command line (`--set key=value` and numeric flags), read without pydantic
so that building the command line stays fast. The schemas check them later, with the file's values."""

from __future__ import annotations

from typing import Any

from lora_cli.config.yamlio import YamlError, parse_yaml
from lora_cli.errors import ConfigError

Override = tuple[str, str, Any]  # (source, dotted key, value), e.g. ("--rank", "adapter.rank", 4)


def parse_set_option(text: str) -> tuple[str, Any]:
    """Split one `--set section.key=value` into (key, parsed value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set adapter.rank=4")
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
