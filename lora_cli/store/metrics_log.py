"""The metrics log (metrics.jsonl): one JSON row per logged point, appended and flushed as
training goes, each stage's rows replaced by its recorded ones when it completes, and a
SHA-256 of those rows in its manifest record so that resume can tell them changed.

A mixin of `RunFolder` (lora_cli/store/run_folder.py), which supplies `path`, `manifest()`
and `fix()` (the repair clause for messages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lora_cli.errors import DamageError
from lora_cli.store.files import atomic_write, dumps, sha256_bytes

METRICS = "metrics.jsonl"


class MetricsLog:
    path: Path

    def _metric_lines(self) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
        """(line, row) for every row that names its stage, and the numbers of unreadable lines."""
        path = self.path / METRICS
        if not path.is_file():
            return [], []
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DamageError(f"{path}: unreadable ({exc})", self.fix()) from None
        good, bad = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            (good.append((line, row)) if is_row(row) else bad.append(number))
        return good, bad

    def metrics(self) -> list[dict[str, Any]]:
        """Every row of metrics.jsonl; RunError naming the first unreadable line."""
        good, bad = self._metric_lines()
        if bad:
            raise DamageError(f"{self.path / METRICS}: line {bad[0]} is not a metrics row (stage, epoch, step, loss)", self.fix())
        return [row for _, row in good]

    def metrics_digest(self, stage: str) -> str:
        """SHA-256 of the stage's rows as written (recorded when the stage completes)."""
        good, _ = self._metric_lines()
        return sha256_bytes("".join(line + "\n" for line, row in good if row["stage"] == stage).encode())

    def metrics_problem(self, stage: str) -> str | None:
        """Why the stage's rows in metrics.jsonl are not the ones it recorded, or None."""
        expected = self.manifest()["stages"].get(stage, {}).get("metrics_sha256")
        if expected is not None and self.metrics_digest(stage) != expected:
            return f"{self.path / METRICS}: {stage}'s rows are missing or changed"
        return None

    def drop_unreadable_metrics(self) -> int:
        """Rewrite metrics.jsonl without its unreadable lines; how many there were."""
        good, bad = self._metric_lines()
        if bad:
            self._write_metrics([row for _, row in good])
        return len(bad)

    def set_metrics(self, stage: str, rows: list[dict[str, Any]]) -> None:
        """Make `rows` the stage's rows, last in the log. A stage that streamed exactly these
        rows, after every other stage's, is left as it is (no rewrite)."""
        good, bad = self._metric_lines()
        if bad:
            raise DamageError(f"{self.path / METRICS}: line {bad[0]} is not a metrics row (stage, epoch, step, loss)", self.fix())
        others = [row for _, row in good if row["stage"] != stage]
        tail = [line for line, _ in good[len(others):]]
        if good[: len(others)] == [pair for pair in good if pair[1]["stage"] != stage] and tail == [dumps(r) for r in rows]:
            return
        self._write_metrics(others + rows)

    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append rows as training logs them, flushed, so a reader (tail -f) sees each at once."""
        with open(self.path / METRICS, "a") as f:
            f.write("".join(dumps(r) + "\n" for r in rows))
            f.flush()

    def _drop_metrics(self, stages: tuple[str, ...]) -> None:
        """Forget the rows of `stages` (and any unreadable line)."""
        good, bad = self._metric_lines()
        kept = [row for _, row in good if row["stage"] not in stages]
        if bad or len(kept) != len(good):
            self._write_metrics(kept)

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.path / METRICS, "".join(dumps(r) + "\n" for r in rows).encode())


def is_row(row: Any) -> bool:
    """A metrics row as stages write it: its stage, the epoch (or iteration) and step as whole
    numbers, the loss as a number (null where it was not finite)."""
    if not isinstance(row, dict) or not isinstance(row.get("stage"), str):
        return False
    whole = [row.get(key) for key in ("step", "epoch" if "epoch" in row else "iteration")]
    loss = row.get("loss", False)
    return all(isinstance(v, int) and not isinstance(v, bool) for v in whole) and (loss is None or isinstance(loss, (int, float)) and not isinstance(loss, bool))


