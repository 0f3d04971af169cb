"""The adapter on disk in Hugging Face PEFT's layout, and the blog's layout.

PEFT stores lora_A as (r, d_in) and lora_B as (d_out, r) under
`base_model.model.<module>.lora_{A,B}.weight`. The blog writes the same update
as x·A·B with A (d_in, r) and B (r, d_out): blog A = lora_Aᵀ, blog B = lora_Bᵀ,
and blog Δθ = A·B = (lora_B·lora_A)ᵀ.
"""

from __future__ import annotations

from typing import Any

import torch

from lora_cli.core.adapter import LoraSpec

MODULE = "linear"
KEY_A = f"base_model.model.{MODULE}.lora_A.weight"
KEY_B = f"base_model.model.{MODULE}.lora_B.weight"


def adapter_state_dict(lora_A: torch.Tensor, lora_B: torch.Tensor) -> dict[str, torch.Tensor]:
    return {KEY_A: lora_A.detach().contiguous(), KEY_B: lora_B.detach().contiguous()}


def adapter_config(spec: LoraSpec) -> dict[str, Any]:
    """adapter_config.json as PEFT writes it for a LoRA on the module `linear`."""
    return {
        "peft_type": "LORA",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "target_modules": [MODULE],
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
        "task_type": None,
    }
