"""The JSON Schema of each config kind, for editors (`lora schema KIND`): the one module that
sees every kind's model, so loading.py (which sweep.py builds on) never imports sweep.py."""

from __future__ import annotations

from typing import Any

from lora_cli.config.schemas import SCHEMAS
from lora_cli.config.sweep import SweepSpec


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a config kind ("pipeline", "approx" or "sweep")."""
    doc = (SweepSpec if kind == "sweep" else SCHEMAS[kind]).model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}
