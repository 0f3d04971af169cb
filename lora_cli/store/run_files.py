"""The files of a run folder that the manifest vouches for: tensors and JSON recorded with
their SHA-256 and checked against it (and tensors for finiteness) on every load, and what
makes a stage's result untrustworthy (`damage`: its files, then its rows in the metrics log).

A mixin of `RunFolder` (lora_cli/store/run_folder.py), which supplies `path`, `manifest()`,
`_write_manifest()`, `metrics_problem` (lora_cli/store/metrics_log.py) and `repair` (the
command that repairs damage, for messages).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lora_cli.errors import DamageError
from lora_cli.store.files import atomic_write, dumps, remove, repair_clause, sha256_bytes

MANIFEST = "manifest.json"


class RunFiles:
    path: Path
    layout: Any  # the kind's Layout (stages in order, files each writes)
    repair: str | None = None  # the command that repairs damage here, set by the stages layer; None: delete the folder

    def fix(self) -> str:
        return repair_clause(self.repair, self.path)

    # ---- files the manifest vouches for ---------------------------------------

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
        return self._record_file(rel, data)

    def _record_file(self, rel: str, data: bytes) -> str:
        digest = sha256_bytes(data)
        m = self.manifest()
        m["files"][rel] = {"sha256": digest, "bytes": len(data)}
        self._write_manifest(m)
        return digest

    def adopt_file(self, rel: str, source: Path) -> str:
        """Record a file another run folder holds as `rel` here: hard-linked (copied where links
        fail). Every lora write replaces a file instead of changing it, so lora never writes
        through the link; an edit by hand reaches both, and both folders' hashes catch it."""
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
        return self._record_file(rel, data)

    def load_tensors(self, rel: str) -> dict[str, Any]:
        """A safetensors file, after checking it against the hash in the manifest and every
        floating tensor for NaN and infinity."""
        tensors, problem = self._tensors(rel)
        if problem:
            raise DamageError(problem, self.fix())
        return tensors

    def load_json(self, rel: str) -> Any:
        obj, problem = self._json(rel)
        if problem:
            raise DamageError(problem, self.fix())
        return obj

    def _bytes(self, rel: str) -> tuple[bytes, str | None]:
        """The file's bytes, or what is wrong with it (missing, not as recorded)."""
        path = self.path / rel
        if not path.is_file():
            return b"", f"{path}: missing"
        data = path.read_bytes()
        recorded = self.manifest()["files"].get(rel, {})
        if recorded.get("sha256") != sha256_bytes(data) or recorded.get("bytes") != len(data):
            links = path.stat().st_nlink - 1
            shared = f"; it is hard-linked with {links} other file{'s' * (links > 1)} (a sweep shares its base so), which changed too" if links else ""
            return b"", f"{path}: does not match the SHA-256 recorded in {MANIFEST} (changed or truncated{shared})"
        return data, None

    def _tensors(self, rel: str) -> tuple[dict[str, Any], str | None]:
        from safetensors.torch import load

        data, problem = self._bytes(rel)
        if problem:
            return {}, problem
        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error types
            return {}, f"{self.path / rel}: not a readable safetensors file ({exc})"
        bad = non_finite(tensors)
        return tensors, f"{self.path / rel}: {bad} holds NaN or infinite values" if bad else None

    def _json(self, rel: str) -> tuple[Any, str | None]:
        data, problem = self._bytes(rel)
        if problem:
            return None, problem
        try:
            return json.loads(data), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"{self.path / rel}: not readable JSON ({exc})"

    def file_problem(self, rel: str) -> str | None:
        """What is wrong with a recorded file (missing, changed, unreadable, not finite), or None."""
        read = self._tensors if rel.endswith(".safetensors") else self._json if rel.endswith(".json") else self._bytes
        return read(rel)[1]

    def damage(self, name: str) -> str | None:
        """Why stage `name`'s recorded result cannot be trusted (the first of its files that is
        missing, changed, unreadable or not finite, or its metrics rows), or None."""
        recorded = self.manifest()["files"]
        written = [*self.layout.files.get(name, ()), *(rel for rel in self.layout.optional.get(name, ()) if rel in recorded)]
        for rel in written:  # RunFolder's Layout
            problem = self.file_problem(rel)
            if problem:
                return problem
        return self.metrics_problem(name)


def non_finite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating tensor holding NaN or infinity (quoted), or None."""
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{name!r}"
    return None
