"""A pipeline run's data, regenerated from its config for notebooks and other tools: the run
folder stores no data (the seeds make it), so anyone can check a result independently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.core.shifts import true_delta
from lora_cli.errors import RunError
from lora_cli.recipes import data as drawn
from lora_cli.stages.kinds import run_config
from lora_cli.store.files import atomic_write
from lora_cli.store.run_folder import RunFolder

def data_tensors(run: RunFolder) -> dict[str, Any]:
    """x, y, x2, y2, theta, theta2 and true_delta, exactly as the run's stages drew them; the
    inputs' population covariances sigma_source and sigma_target (float64; the identity for
    isotropic inputs); and the held-out test rows x_test, y_test (pretrain) and x2_test,
    y2_test (finetune) when data.n_test > 0."""
    if run.kind != "pipeline":  # open_run(expect="pipeline") refuses first, naming what takes the folder
        raise RunError(f"{run.path}: is not a pipeline run folder; lora data regenerates a pipeline run's data")
    cfg = run_config(run)
    theta, theta2 = drawn.thetas(cfg)
    x, y = drawn.regression(cfg, theta, "pretrain")
    x2, y2 = drawn.regression(cfg, theta2, "finetune")
    tensors = {"x": x, "y": y, "x2": x2, "y2": y2, "theta": theta, "theta2": theta2, "true_delta": true_delta(theta, theta2)}
    for name, split in (("sigma_source", "pretrain"), ("sigma_target", "finetune")):
        tensors[name] = drawn.input_sigma(cfg, split)
    for names, theta_of, split in ((("x_test", "y_test"), theta, "pretrain"), (("x2_test", "y2_test"), theta2, "finetune")):
        for name, tensor in zip(names, drawn.held_out(cfg, theta_of, split).get("test", ())):
            tensors[name] = tensor
    return tensors


def write_data(run: RunFolder, out: Path, force: bool = False) -> dict[str, list[int]]:
    """Write the run's data to `out` (safetensors, atomically); returns each key's shape."""
    if out.exists() and not force:
        raise RunError(f"{out}: exists; pass --force to replace it, or choose another --out")
    if out.is_dir():
        raise RunError(f"{out}: is a folder; give a file name such as data.safetensors")
    from safetensors.torch import save

    tensors = data_tensors(run)
    atomic_write(out, save({k: t.contiguous() for k, t in tensors.items()}, metadata={"run_dir": str(run.path)}))
    return {k: list(t.shape) for k, t in tensors.items()}
