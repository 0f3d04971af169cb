"""The files of a run folder that the manifest vouches for: tensors and JSON recorded with
their SHA-256 and checked against it on every load, and the metrics log.

A mixin of `RunFolder` (lora_cli/store/run_folder.py), which supplies `path`, `manifest()` and
`_write_manifest()`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lora_cli.errors import RunError
from lora_cli.store.files import atomic_write, dumps, remove, sha256_bytes

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"


class RunFiles:
    def save_tensors(self, rel: str, tensors: dict[str, Any]) -> str:
        """Write a safetensors file atomically and record its SHA-256; returns the hash."""
        from safetensors.torch import save

        data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        return self._save_bytes(rel, data)

    def save_json(self, rel: str, obj: Any) -> str:
        return self._save_bytes(rel, (dumps(obj, indent=2) + "\n").encode())

    def save_text(self, rel: str, text: str) -> str:
        return self._save_bytes(rel, text.encode())

    def _save_bytes(self, rel: str, data: bytes) -> str:
        atomic_write(self.path / rel, data)
        digest = sha256_bytes(data)
        m = self.manifest()
        m["files"][rel] = {"sha256": digest, "bytes": len(data)}
        self._write_manifest(m)
        return digest

    def adopt_file(self, rel: str, source: Path) -> str:
        """Record a file another run folder holds as `rel` here: hard-linked (copied where links
        fail), which is safe because every write replaces a file instead of changing it."""
        data = source.read_bytes()
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.link.tmp")
        remove(temporary)
        try:
            os.link(source, temporary)
            os.replace(temporary, target)
        except OSError:
            remove(temporary)
            atomic_write(target, data)
        digest = sha256_bytes(data)
        m = self.manifest()
        m["files"][rel] = {"sha256": digest, "bytes": len(data)}
        self._write_manifest(m)
        return digest

    def load_tensors(self, rel: str, stage: str) -> dict[str, Any]:
        """Read a safetensors file after checking it against the hash in the manifest."""
        from safetensors.torch import load

        data = self._load_bytes(rel, stage)
        try:
            return load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise RunError(f"{self.path / rel}: not a readable safetensors file ({exc}); rerun `lora {stage}`") from None

    def load_json(self, rel: str, stage: str) -> Any:
        return json.loads(self._load_bytes(rel, stage))

    def _load_bytes(self, rel: str, stage: str) -> bytes:
        path = self.path / rel
        if not path.is_file():
            raise RunError(f"{path}: missing; rerun `lora {stage} --run-dir {self.path}`")
        data = path.read_bytes()
        expected = self.manifest()["files"].get(rel, {}).get("sha256")
        if expected != sha256_bytes(data):
            raise RunError(
                f"{path}: does not match the SHA-256 recorded in {MANIFEST} (changed or truncated); "
                f"rerun `lora {stage} --run-dir {self.path}`"
            )
        return data

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def add_metrics(self, rows: list[dict[str, Any]]) -> None:
        self._write_metrics(self.metrics() + rows)

    def _drop_metrics(self, stages: tuple[str, ...]) -> None:
        rows = self.metrics()
        kept = [r for r in rows if r.get("stage") not in stages]
        if len(kept) != len(rows):
            self._write_metrics(kept)

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.path / METRICS, "".join(dumps(r) + "\n" for r in rows).encode())
