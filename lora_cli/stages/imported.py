"""An adapter folder that PEFT saved (`save_pretrained`), read for `lora merge --adapter DIR`:
its config as an AdapterSpec, its tensors under lora's keys, both checked against the run's
base before anything is merged. Every problem is one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.methods import peft
from lora_cli.methods.registry import method_of
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M, MODULE, AdapterSpec
from lora_cli.errors import RunError
from lora_cli.store.files import read_json_object, read_small, sha256_bytes

OWN_MODULE = KEY_A.removesuffix(".lora_A.weight")  # the module path lora's own adapters name

FIX = "it must be a PEFT LoRA folder (adapter_config.json, adapter_model.safetensors) for one linear layer"


def read_adapter(folder: Path, weight_shape: tuple[int, int]) -> tuple[AdapterSpec, dict[str, Any], dict[str, Any]]:
    """(spec, adapter state dict, source) of the PEFT folder; `source` records where it came
    from (path, SHA-256 of its weights, and what its config said)."""
    import torch
    from safetensors.torch import load

    if not folder.is_dir():
        raise RunError(f"--adapter {folder}: no such folder; {FIX}")
    config_path, weights_path = folder / peft.CONFIG_FILE, folder / peft.WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise RunError(f"{path}: missing (or not a regular file); {FIX}")
    saved = read_json_object(config_path, FIX)
    try:
        spec = peft.spec_from_config(saved)
    except ValueError as exc:
        raise RunError(f"{config_path}: {exc}") from None
    try:
        data = read_small(weights_path, 2**36)  # 64 GiB: any one layer's adapter fits
    except OSError as exc:
        raise RunError(f"{weights_path}: cannot be read ({exc.strerror or exc}); {FIX}") from None
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise RunError(f"{weights_path}: not a readable safetensors file ({exc}); {FIX}") from None
    try:
        adapter, names = peft.adapter_from_peft(tensors)
    except ValueError as exc:
        raise RunError(f"{weights_path}: {exc}; {FIX}") from None
    problem = method_of(spec).check(weight_shape, spec, adapter)
    if problem:
        for key in (KEY_A, KEY_B, KEY_M):  # say it with the file's own names
            problem = problem.replace(key, names.get(key, key.rsplit(f"{MODULE}.", 1)[-1]))
        raise RunError(f"{weights_path}: {problem}; adapter_config.json says r = {spec.rank}, and the run's base is {weight_shape[0]} x {weight_shape[1]}")
    adapter = {key: tensor.to(torch.float32) for key, tensor in adapter.items()}
    source = {"path": str(folder.resolve()), "sha256": sha256_bytes(data), "rank": spec.rank, "alpha": spec.alpha,
              "scaling_rule": spec.scaling_rule, "method": spec.method, "module": names[KEY_A].removesuffix("lora_A.weight").rstrip("."),
              "target_modules": saved.get("target_modules")}
    return spec, adapter, source
