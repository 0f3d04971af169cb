"""The adapter on disk in Hugging Face PEFT's layout: adapter_config.json from the AdapterSpec.

The tensors are already PEFT-keyed (core/adapter.state_dict). The blog writes the same
update as x·A·B with A (d_in, r) and B (r, d_out): blog A = lora_Aᵀ, blog B = lora_Bᵀ,
and blog Δθ = A·B = (lora_B·lora_A)ᵀ.
"""

from __future__ import annotations

from typing import Any

from lora_cli.core.adapter import MODULE, AdapterSpec


def adapter_config(spec: AdapterSpec) -> dict[str, Any]:
    """adapter_config.json as PEFT writes it for a LoRA on the module `linear`."""
    return {
        "peft_type": "LORA",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "target_modules": [MODULE],
        "init_lora_weights": True,
        "use_rslora": spec.scaling_rule == "rslora",
        "use_dora": False,
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
        "task_type": None,
    }


def mismatch(saved: dict[str, Any], spec: AdapterSpec) -> str | None:
    """Which fields of a saved adapter_config.json disagree with `spec`, worded; None when none do."""
    expected = adapter_config(spec)
    keys = [k for k in ("r", "lora_alpha", "use_rslora", "use_dora") if saved.get(k) != expected[k]]
    if not keys:
        return None
    found = ", ".join(f"{k} = {saved.get(k)!r}" for k in keys)
    wanted = ", ".join(f"{expected[k]!r}" for k in keys)
    return f"{found} do not match {wanted} from"
