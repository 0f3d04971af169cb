"""The checkpoint format: one safetensors file holding a stage's TrainState.

Tensors (parameters, optimiser state, the batch generator's RNG state) are the file's
tensors; the epoch, engine and logged history (each point's metrics by name) go in its
header metadata, the epoch also on its own (`EPOCH`), which is all the run store reads.
The store writes the bytes whole by an atomic rename, so tensors and metadata always belong
to the same epoch. Checkpoints are transient (deleted when the stage completes).
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_cli.errors import RunError
from lora_cli.store.checkpoints import CHECKPOINT_EPOCH
from lora_cli.train.loop import History, LogPoint, TrainState

KEY = "lora_checkpoint"


def encode(stage: str, state: TrainState) -> bytes:
    from safetensors.torch import save

    meta = {"stage": stage, "epoch": state.epoch, "engine": state.engine,
            "history": [[p.epoch, p.step, p.loss, p.metrics] for p in state.history.points]}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.tensors.items()}
    tensors["generator_state"] = state.generator_state
    return save(tensors, metadata={KEY: json.dumps(meta), CHECKPOINT_EPOCH: str(state.epoch)})


def decode(path: Path, stage: str) -> TrainState:
    """Read `stage`'s checkpoint; RunError (one line) when it is damaged in any way or was
    written by another stage (a file copied or renamed by hand)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()[KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        # [epoch, step, loss] before named metrics, [epoch, step, loss, {name: value}] since
        history = History([LogPoint(int(p[0]), int(p[1]), float(p[2]), {k: float(v) for k, v in (p[3:] or [{}])[0].items()}) for p in meta["history"]])
        generator_state = tensors.pop("generator_state")
        state = TrainState(int(meta["epoch"]), str(meta["engine"]), tensors, generator_state, history)
        written_by = str(meta["stage"])
    except Exception as exc:  # any damage: safetensors, JSON or missing fields
        raise RunError(f"{path}: damaged checkpoint ({type(exc).__name__}); start the stage over with --force") from None
    if written_by != stage:
        raise RunError(f"{path}: holds a {written_by} checkpoint, not {stage}'s; start the stage over with --force")
    return state
