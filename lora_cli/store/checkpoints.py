"""A stage's resumable checkpoint in its run folder: checkpoints/<stage>.safetensors, its
epoch in the file's metadata and in the stage's manifest record, removed once the stage's
result is durable. What a checkpoint holds is train/checkpoint.py's; the store reads only
the epoch key.

A mixin of `RunFolder` (lora_cli/store/run_folder.py), which supplies `path`, `manifest()`,
`_write_manifest()` and `update_stage()`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_cli.errors import RunError
from lora_cli.store.files import atomic_write, remove, remove_empty_folder

CHECKPOINT_EPOCH = "epoch"  # a checkpoint file's metadata key holding its epoch
LEGACY_CHECKPOINT = "lora_checkpoint"  # where it was before: inside this key's JSON


def checkpoint_path(stage: str) -> str:
    return f"checkpoints/{stage}.safetensors"


class Checkpoints:
    path: Path

    def save_checkpoint(self, stage: str, data: bytes, epoch: int) -> None:
        atomic_write(self.path / checkpoint_path(stage), data)
        self.update_stage(stage, checkpoint_epoch=epoch)

    def checkpoint_file(self, stage: str) -> Path | None:
        """The stage's checkpoint file, or None when it has none."""
        path = self.path / checkpoint_path(stage)
        return path if path.is_file() else None

    def checkpoint_epoch(self, stage: str) -> int | None:
        """The epoch the stage's checkpoint holds (the file's CHECKPOINT_EPOCH metadata), or None
        when there is none; RunError when the file is damaged."""
        path = self.checkpoint_file(stage)
        if path is None:
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
            epoch = meta.get(CHECKPOINT_EPOCH) or json.loads(meta[LEGACY_CHECKPOINT])["epoch"]  # files from before it was its own key
            return int(epoch)
        except Exception as exc:  # any damage: safetensors, JSON or missing fields
            raise RunError(f"{path}: damaged checkpoint ({type(exc).__name__}); start the stage over with --force") from None

    def remove_checkpoint(self, stage: str) -> None:
        """Delete the stage's checkpoint (call once its result is durable) and its record."""
        remove(self.path / checkpoint_path(stage))
        remove_empty_folder(self.path / "checkpoints")
        m = self.manifest()
        if m["stages"].get(stage, {}).pop("checkpoint_epoch", None) is not None:
            self._write_manifest(m)
