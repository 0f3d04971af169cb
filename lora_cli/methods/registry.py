"""The methods by name: `adapter.method` (`--method`) picks one. A new way of fine-tuning is a
module beside these and one entry here (and, for an engine that trains it, one in
train/engines.py). Importing this does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_cli.methods.dora import DoRA
from lora_cli.methods.full import Full
from lora_cli.methods.lora import LoRA
from lora_cli.methods.lora_fa import LoRAFA
from lora_cli.methods.lora_fb import LoRAFB
from lora_cli.methods.method import Method, Params
from lora_cli.methods.spec import AdapterSpec
from lora_cli.methods.vera import VeRA

if TYPE_CHECKING:
    import torch

METHODS: dict[str, Method] = {m.name: m for m in (LoRA(), DoRA(), LoRAFA(), LoRAFB(), VeRA(), Full())}


def method_of(spec: AdapterSpec) -> Method:
    return METHODS[spec.method]


def merge(base: dict[str, torch.Tensor], spec: AdapterSpec, params: Params) -> dict[str, torch.Tensor]:
    """{"weight": W'} as new tensors for `params` of spec's method on base["weight"]; the inputs
    are not modified.

    Raises:
        ValueError: when the params' shapes do not fit the base weight.
    """
    weight, method = base["weight"], method_of(spec)
    problem = method.check(tuple(weight.shape), spec, params)
    if problem:
        raise ValueError(f"the adapter {problem}")
    return {"weight": method.merged(weight, spec, params)}
