"""A finetune's result on disk, whatever the method: the LoRA family as a PEFT adapter folder
(adapter/), a method with no PEFT format (full fine-tuning) as its own tensors (finetuned.safetensors).
Both are checked against their hash and the config's shapes when read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.config.schemas import Config
from lora_cli.errors import RunError
from lora_cli.methods import peft
from lora_cli.methods.registry import method_of
from lora_cli.methods.spec import AdapterSpec
from lora_cli.recipes import pipeline as recipe
from lora_cli.stages.common import require_tensor
from lora_cli.stages.imported import read_adapter
from lora_cli.stages.kinds import ADAPTER_CONFIG, ADAPTER_WEIGHTS, BASE, FINETUNED
from lora_cli.store.run_folder import RunFolder


def stored_spec(cfg: Config) -> AdapterSpec:
    """The spec of the params as the run folder holds them (for a PEFT adapter, loadable onto base.safetensors)."""
    return _as_stored(cfg.adapter.spec())


def _as_stored(spec: AdapterSpec) -> AdapterSpec:
    return spec if method_of(spec).no_peft else peft.export_spec(spec)


def save_trained(run: RunFolder, spec: AdapterSpec, result: recipe.FinetuneResult) -> tuple[AdapterSpec, dict[str, Any]]:
    """Write the params `spec`'s method trained; (stored spec, stored params)."""
    stored = _as_stored(spec)
    if method_of(spec).no_peft:
        run.save_tensors(FINETUNED, result.adapter)
        return stored, result.adapter
    exported = peft.export(spec, result.adapter, result.initial)
    run.save_tensors(ADAPTER_WEIGHTS, exported)
    run.save_json(ADAPTER_CONFIG, peft.adapter_config(stored))
    return stored, exported


def load_trained(run: RunFolder, cfg: Config) -> dict[str, Any]:
    """The stored params (of `stored_spec`), checked against their hash, the config's shapes and,
    for a PEFT adapter, adapter_config.json."""
    spec, d, fix = stored_spec(cfg), cfg.data, run.fix()
    method = method_of(spec)
    name = FINETUNED if method.no_peft else ADAPTER_WEIGHTS
    tensors, path = run.load_tensors(name), run.path / name
    shapes = method.shapes(spec, d.d_in, d.d_out)
    params = {key: require_tensor(tensors, key, shape, path, fix) for key, shape in shapes.items()}
    if method.no_peft:
        return params
    problem = peft.mismatch(run.load_json(ADAPTER_CONFIG), spec)
    if problem:
        raise RunError(f"{run.path / ADAPTER_CONFIG}: {problem} config.yaml; {fix}")
    return params


def to_merge(run: RunFolder, cfg: Config, base: Any, adapter_dir: Path | None) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """(spec, params, source): the run's own (source None), after checking they were trained on
    this base, or the PEFT folder `adapter_dir`, checked against the base."""
    if adapter_dir is not None:
        return read_adapter(adapter_dir, tuple(base.shape))
    if run.manifest()["files"][BASE]["sha256"] != run.stage("finetune").get("base_sha256"):
        raise RunError(
            f"{run.path / BASE}: is not the base the adapter was trained on (SHA-256 differs); "
            f"rerun `lora finetune --run-dir {run.path} --force`"
        )
    return stored_spec(cfg), load_trained(run, cfg), None
