"""A sweep's results: one row per trial, from the sweep's manifest and each trial's own record,
written as results.jsonl and results.csv (rewritten whole, atomically, after every group)."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

from lora_cli.config.sweep import Sweep
from lora_cli.recipes.sweep import group_key
from lora_cli.stages import results
from lora_cli.stages.kinds import LAYOUTS, RESULTS_CSV, RESULTS_JSONL
from lora_cli.store.files import dumps
from lora_cli.store.run_folder import RunFolder

# the finetune record's fields each row carries, after the trial's id, status and axis values
RECORD_FIELDS = ("rank", "alpha", "scaling_rule", "init", "lr_ratio", "method", "baseline_loss", "final_loss", "final_test_loss",
                 "optimal_loss", "gap", "population_optimal_loss", "engine", "seconds")
SUBSPACE_FIELDS = ("delta_relative_error", "energy_captured", "best_energy", "column_angle_max", "stable_rank")


def rows(run: RunFolder, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial in grid order; numbers only for complete trials."""
    entries = run.manifest().get("trials", {})
    children = run.children(LAYOUTS)
    out = []
    for trial in sweep.trials:
        entry = entries.get(trial.id, {})
        row = {"trial": trial.id, "status": entry.get("status", "pending"), **{k: trial.values[k] for k in sweep.axes}}
        row["problem"] = hashlib.sha256(group_key(trial.config).encode()).hexdigest()[:8]  # same data, shift, schedule
        child = children.get(f"trials/{trial.id}")
        record = results.load(child, "finetune").entry() if child is not None and row["status"] == "complete" else {}
        row.update({field: record.get(field) for field in RECORD_FIELDS})
        gap, optimum = record.get("gap"), record.get("optimal_loss")
        row["gap_relative"] = gap / optimum if gap is not None and optimum else None
        row.update(_subspace(record.get("subspace")))
        row["error"] = entry.get("error")
        out.append(row)
    return out


def _subspace(diagnostics: dict[str, Any] | None) -> dict[str, Any]:
    if not diagnostics:
        return dict.fromkeys(SUBSPACE_FIELDS)
    shift = diagnostics["shift"]
    angles = shift["column_angles"]
    return {
        "delta_relative_error": shift["relative_error"],
        "energy_captured": shift["energy_captured"],
        "best_energy": shift["best_energy"],
        "column_angle_max": max(angles) if angles else None,
        "stable_rank": diagnostics["stable_rank"],
    }


def write_results(run: RunFolder, sweep: Sweep) -> list[dict[str, Any]]:
    """Write results.jsonl and results.csv from the trials as they stand; returns the rows."""
    table = rows(run, sweep)
    run.save_text(RESULTS_JSONL, "".join(dumps(row) + "\n" for row in table))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]) if table else ["trial"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in table)
    run.save_text(RESULTS_CSV, text.getvalue())
    return table


def unrepaired(rows: list[dict[str, Any]], run: RunFolder) -> list[str]:
    """Trials a resume found damaged that did not complete again."""
    entries = run.manifest().get("trials", {})
    return [row["trial"] for row in rows if entries.get(row["trial"], {}).get("repair") and row["status"] != "complete"]


def sweep_counts(run: RunFolder) -> dict[str, float]:
    """What a sweep's own tracker run hears at the end: how many trials ended how."""
    trials = run.manifest().get("trials", {}).values()
    return {f"trials_{status}": float(sum(t.get("status") == status for t in trials)) for status in ("complete", "failed")}
