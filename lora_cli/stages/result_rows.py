"""Result tables for notebooks, one schema for runs and sweeps:

    results.csv / results.jsonl   a row per trial (a run: one row): its id, status, the
                                  record's numbers, the subspace summary, then every resolved
                                  config key (seeds included) as `config.<key>`
    curves.csv                    long format: trial, stage, epoch, metric, value; one line
                                  per logged metric per log epoch (pandas.read_csv loads it)

Rows are built from each stage's typed record and metrics.jsonl, the same data the terminal
tables show; nothing here recomputes a number.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from lora_cli.config.stages import ADAPTED
from lora_cli.measure.trackers import flat_params
from lora_cli.stages import results
from lora_cli.stages.kinds import CURVES_CSV, RESULTS_CSV, RESULTS_JSONL
from lora_cli.store.files import dumps
from lora_cli.store.run_folder import RunFolder

# the finetune record's fields each row carries, after the trial's id, status and axis values
RECORD_FIELDS = ("rank", "alpha", "scaling_rule", "init", "lr_ratio", "method", "baseline_loss", "final_loss", "final_test_loss", "final_source_loss",
                 "optimal_loss", "gap", "population_optimal_loss", "engine")  # no timings: a resumed run's tables are byte-identical
# the diagnostics' own fields a row carries as they are (absent in records made before they were measured)
DIAGNOSTIC_FIELDS = ("rank_90", "intruders", "optimum_intruders", "optimum_column_angle", "optimum_row_angle")
SUBSPACE_FIELDS = ("delta_relative_error", "energy_captured", "best_energy", "column_angle_max", "stable_rank", *DIAGNOSTIC_FIELDS)
TABLE_COLUMNS = (*RECORD_FIELDS, "gap_relative", *SUBSPACE_FIELDS)  # what a sweep spec's plot.columns may add to the table
CURVE_COLUMNS = ("trial", "stage", "epoch", "metric", "value")
_NOT_METRICS = ("stage", "epoch", "step")


def result_row(folder: RunFolder | None, status: str, config: dict[str, Any]) -> dict[str, Any]:
    """The adapted stage's numbers (None until it is complete) and every config key."""
    record = results.load(folder, ADAPTED).entry() if folder is not None and status == "complete" else {}
    row = {field: record.get(field) for field in RECORD_FIELDS}
    gap, optimum = record.get("gap"), record.get("optimal_loss")
    row["gap_relative"] = gap / optimum if gap is not None and optimum else None
    row.update(_subspace(record.get("subspace")))
    row.update({f"config.{key}": value for key, value in flat_params(config).items()})
    return row


def curve_rows(trial: str, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """metrics.jsonl rows in long format, one line per metric that has a value."""
    return [{"trial": trial, "stage": row["stage"], "epoch": row["epoch"], "metric": key, "value": value}
            for row in metrics for key, value in row.items() if key not in _NOT_METRICS and value is not None]


def write_tables(run: RunFolder, rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> None:
    """results.jsonl, results.csv and curves.csv, each rewritten whole and atomically."""
    run.save_text(RESULTS_JSONL, "".join(dumps(row) + "\n" for row in rows))
    run.save_text(RESULTS_CSV, csv_text(rows))
    run.save_text(CURVES_CSV, csv_text(curves, list(CURVE_COLUMNS)))


def write_run_tables(run: RunFolder, config: dict[str, Any]) -> None:
    """A pipeline run's own results row and curves; its trial is the config's name (not the
    folder's, so that two runs of one config write the same bytes)."""
    status = run.stage(ADAPTED).get("status", "pending")
    row = {"trial": config["name"], "status": status, **result_row(run, status, config)}
    write_tables(run, [row], curve_rows(config["name"], run.metrics()))


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as CSV (columns: the first row's keys, unless given); None as an empty cell."""
    columns = columns or (list(rows[0]) if rows else ["trial"])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return text.getvalue()


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
        **{key: diagnostics.get(key) for key in DIAGNOSTIC_FIELDS},
    }
