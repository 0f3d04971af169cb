"""The adapter on disk in Hugging Face PEFT's layout: adapter_config.json from the AdapterSpec,
and the export that lets PEFT load every init onto the original base weight.

The tensors are already PEFT-keyed (methods/spec.py). The blog writes the same
update as x·A·B with A (d_in, r) and B (r, d_out): blog A = lora_Aᵀ, blog B = lora_Bᵀ,
and blog Δθ = A·B = (lora_B·lora_A)ᵀ.

PEFT re-runs an adapter's recorded init when it loads one, and PiSSA's or OLoRA's init
changes the base weight. So, as PEFT's own conversion does, such an adapter is exported as
a plain LoRA of rank 2r onto the original W: A' = [A; A₀], B' = [B, −B₀], scaled like the
original (alpha' = 2·alpha under the standard rule, √2·alpha under rsLoRA), so that
W + s·B'·A' = (W − s·B₀·A₀) + s·B·A.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lora_cli.methods.inits import INITS
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M, MODULE, SCALING_RULES, AdapterSpec
from lora_cli.store.files import json_shown


def adapter_config(spec: AdapterSpec) -> dict[str, Any]:
    """adapter_config.json as PEFT writes it for a LoRA on the module `linear` (or the method's own format, VeRA's)."""
    from lora_cli.methods.registry import METHODS

    own = METHODS[spec.method].peft_config(spec)
    if own is not None:
        return own
    return {
        "peft_type": "LORA",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "target_modules": [MODULE],
        "init_lora_weights": INITS[spec.init].peft,
        "use_rslora": spec.scaling_rule == "rslora",
        "use_dora": spec.method == "dora",
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
        "task_type": None,
    }


def export_spec(spec: AdapterSpec) -> AdapterSpec:
    """The spec of the adapter as stored: itself, or for an init that changes the base, the
    rank-2r plain LoRA onto the original W (same scaling)."""
    if not INITS[spec.init].changes_base:
        return spec
    unit = SCALING_RULES[spec.scaling_rule].fn(1.0, 2 * spec.rank)  # scaling per unit of alpha at rank 2r
    return dataclasses.replace(spec, rank=2 * spec.rank, alpha=spec.scaling / unit, init="kaiming")


def export(spec: AdapterSpec, adapter: dict[str, Any], initial: dict[str, Any]) -> dict[str, Any]:
    """The adapter as stored for `export_spec(spec)`; `initial` holds lora_A₀, lora_B₀."""
    if not INITS[spec.init].changes_base:
        return adapter
    import torch

    return {
        **adapter,  # DoRA's m carries over: W + s·B'·A' has the same rows, so the same norms
        KEY_A: torch.cat([adapter[KEY_A], initial[KEY_A]], dim=0).contiguous(),
        KEY_B: torch.cat([adapter[KEY_B], -initial[KEY_B]], dim=1).contiguous(),
    }


def mismatch(saved: dict[str, Any], spec: AdapterSpec) -> str | None:
    """Which fields of a saved adapter_config.json disagree with `spec` (as exported), worded;
    None when none do."""
    expected = adapter_config(export_spec(spec))
    keys = [k for k in ("peft_type", "r", "lora_alpha", "use_rslora", "use_dora") if k in expected and saved.get(k) != expected[k]]
    if not keys:
        return None
    found = ", ".join(f"{k} = {saved.get(k)!r}" for k in keys)
    wanted = ", ".join(f"{expected[k]!r}" for k in keys)
    return f"{found} do not match {wanted} from"


# what a PEFT adapter folder holds, by file name
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_SUFFIXES = {".lora_A.weight": KEY_A, ".lora_B.weight": KEY_B, ".lora_magnitude_vector": KEY_M}


def spec_from_config(saved: dict[str, Any]) -> AdapterSpec:
    """The AdapterSpec of an adapter_config.json that PEFT saved for one LoRA (or DoRA) on a
    linear layer. ValueError, worded, for anything lora cannot merge exactly as PEFT would."""
    if saved.get("peft_type") != "LORA":
        raise ValueError(f"peft_type is {saved.get('peft_type')!r}; only LORA adapters can be merged")
    rank, alpha = saved.get("r"), saved.get("lora_alpha")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"r = {json_shown(rank)} must be a whole number ≥ 1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"lora_alpha = {json_shown(alpha)} must be a finite number > 0")
    for key in ("use_rslora", "use_dora"):
        if not isinstance(saved.get(key, False), bool):
            raise ValueError(f"{key} = {json_shown(saved[key])} must be true or false")
    init = saved.get("init_lora_weights", True)
    if init in ("pissa", "olora", "corda", "loftq") or (isinstance(init, str) and init.startswith("pissa")):
        raise ValueError(
            f"init_lora_weights = {init!r}: such an adapter applies to PEFT's residual base, not the original weight; "
            "save it with PEFT's path_initial_model_for_weight_conversion and import that"
        )
    for key, allowed in (("fan_in_fan_out", False), ("bias", "none")):
        if saved.get(key, allowed) != allowed:
            raise ValueError(f"{key} = {saved.get(key)!r}: only {allowed!r} is supported")
    rule = "rslora" if saved.get("use_rslora") else "standard"
    return AdapterSpec(rank=rank, alpha=float(alpha), init="kaiming", scaling_rule=rule, method="dora" if saved.get("use_dora") else "lora")


def adapter_from_peft(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """PEFT's saved tensors for one adapted module, whatever the module's path, under lora's
    keys, and each lora key's name in the file. ValueError when they adapt more than one module,
    hold something else, or hold anything but finite floating-point numbers."""
    renamed, names, modules = {}, {}, set()
    for name, tensor in tensors.items():
        suffix = next((s for s in _SUFFIXES if name.endswith(s) or name == s[1:]), None)
        if suffix is None:
            raise ValueError(f"holds {name!r}, whose name does not end in lora_A.weight, lora_B.weight or lora_magnitude_vector")
        if not tensor.is_floating_point():
            raise ValueError(f"{name!r} holds {str(tensor.dtype).replace('torch.', '')} numbers; an adapter's tensors are floating point")
        modules.add(name[: -len(suffix)] if name != suffix[1:] else "")
        renamed[_SUFFIXES[suffix]], names[_SUFFIXES[suffix]] = tensor, name
    if len(modules) != 1:
        raise ValueError(f"adapts {len(modules)} modules ({', '.join(sorted(modules)) or 'none'}); lora merges one linear layer")
    from lora_cli.store.run_files import non_finite

    bad = non_finite({names[key]: tensor for key, tensor in renamed.items()})
    if bad:
        raise ValueError(f"{bad} holds NaN or infinite values")
    return renamed, names

