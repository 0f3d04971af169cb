"""A sweep's results: one row per trial, from the sweep's manifest and each trial's own record
(stages/result_rows.py: the same columns as a single run's), and the curves of every trial and
base, written as results.jsonl, results.csv and curves.csv after every group."""

from __future__ import annotations

import hashlib
import statistics
from typing import Any

from lora_cli.config.stages import ADAPTED, BASE_STAGE
from lora_cli.config.sweep import Sweep
from lora_cli.recipes.sweep import group_key
from lora_cli.stages.kinds import LAYOUTS, SEEDS_CSV
from lora_cli.stages.result_rows import csv_text, curve_rows, result_row, write_tables
from lora_cli.store.run_folder import RunFolder


def rows(run: RunFolder, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial in grid order; numbers only for complete trials."""
    entries = run.manifest().get("trials", {})
    children = run.children(LAYOUTS)
    out = []
    for trial in sweep.trials:
        entry = entries.get(trial.id, {})
        row = {"trial": trial.id, "status": entry.get("status", "pending"), **{k: trial.values[k] for k in sweep.axes}}
        row["problem"] = hashlib.sha256(group_key(trial.config).encode()).hexdigest()[:8]  # same data, shift, schedule
        row["error"] = entry.get("error")
        row.update(result_row(children.get(f"trials/{trial.id}"), row["status"], trial.config.to_dict()))
        out.append(row)
    return out


def curves(run: RunFolder, sweep: Sweep) -> list[dict[str, Any]]:
    """Each complete trial's finetune curves, then each base's pretrain curves (trial: base-<n>)."""
    children, out = run.children(LAYOUTS), []
    for rel, child in children.items():
        kind, name = rel.split("/", 1)
        stage = ADAPTED if kind == "trials" else BASE_STAGE
        if child.stage(stage).get("status") == "complete":
            out += curve_rows(name, [row for row in child.metrics() if row["stage"] == stage])
    return out


def write_results(run: RunFolder, sweep: Sweep) -> list[dict[str, Any]]:
    """Write results.jsonl, results.csv and curves.csv (and seeds.csv when seed is an axis)
    from the trials as they stand; the rows."""
    table = rows(run, sweep)
    write_tables(run, table, curves(run, sweep))
    if SEED in sweep.axes:
        run.save_text(SEEDS_CSV, csv_text(by_seed(table, sweep.axes)))
    return table


SEED = "seed"
SUMMARISED = ("final_loss", "optimal_loss", "gap", "final_test_loss", "population_optimal_loss", "final_source_loss", "intruders", "optimum_intruders")


def by_seed(rows: list[dict[str, Any]], axes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Trials that differ only in their seed, as one row: the other axes' values, n (complete
    trials), and each of SUMMARISED's mean, sample std (n ≥ 2), min and max over the seeds;
    the trials and seeds it holds. Rows in the grid's order."""
    others = tuple(a for a in axes if a != SEED)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[a]) for a in others), []).append(row)
    out = []
    for members in groups.values():
        done = [m for m in members if m["status"] == "complete"]
        agg = {a: members[0][a] for a in others} | {"n": len(done), "of": len(members), "problem": members[0]["problem"],
                                                      "method": next((m["method"] for m in done), None), "rank": next((m["rank"] for m in done), None)}
        for key in SUMMARISED:
            values = [m[key] for m in done if m.get(key) is not None]
            agg |= _stats(key, values)
        agg["trials"] = " ".join(m["trial"] for m in members)
        agg["seeds"] = " ".join(str(m[SEED]) for m in members)
        out.append(agg)
    return out


def _stats(key: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys((f"{key}_mean", f"{key}_std", f"{key}_min", f"{key}_max"))
    std = statistics.stdev(values) if len(values) > 1 else None  # the sample std
    return {f"{key}_mean": statistics.fmean(values), f"{key}_std": std, f"{key}_min": min(values), f"{key}_max": max(values)}


def unrepaired(rows: list[dict[str, Any]], run: RunFolder) -> list[str]:
    """Trials a resume found damaged that did not complete again."""
    entries = run.manifest().get("trials", {})
    return [row["trial"] for row in rows if entries.get(row["trial"], {}).get("repair") and row["status"] != "complete"]


def sweep_counts(run: RunFolder) -> dict[str, float]:
    """What a sweep's own tracker run hears at the end: how many trials ended how."""
    trials = run.manifest().get("trials", {}).values()
    return {f"trials_{status}": float(sum(t.get("status") == status for t in trials)) for status in ("complete", "failed")}
