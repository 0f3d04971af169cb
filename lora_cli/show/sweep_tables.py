"""Rich tables of a sweep: the plan (`--dry-run`) and the summary, sorted by gap."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lora_cli.show.tables import fmt_loss


def plan_table(trials: list[Any], axes: tuple[str, ...], engines: dict[str, str]) -> Table:
    """The expanded grid: each trial's axis values and the engine that will train it."""
    table = Table(title=f"{len(trials)} trials", title_justify="left")
    table.add_column("trial")
    for axis in axes:
        table.add_column(axis, justify="right")
    table.add_column("engine")
    for trial in trials:
        table.add_row(trial.id.split("-", 1)[0], *(str(trial.values[a]) for a in axes), engines[trial.id])
    return table


def groups_table(groups: list[dict[str, Any]]) -> Table:
    table = Table(title="Trial groups (one pass of training each)", title_justify="left")
    ranks = any("rank" in g for g in groups)  # under torchrun: the process each group goes to
    for column in ("group", *(("rank",) if ranks else ()), "engine", "trials", "memory", "≈ time", "why alone"):
        table.add_column(column, justify="right" if column in ("rank", "trials", "memory", "≈ time") else "left")
    for i, g in enumerate(groups, 1):
        rank = (str(g["rank"]),) if ranks else ()
        table.add_row(str(i), *rank, g["engine"], str(len(g["trials"])), g["memory"], f"{g['seconds']:.0f} s", g["why"] or "")
    return table


def summary_table(rows: list[dict[str, Any]], axes: tuple[str, ...]) -> Table:
    """Trials sorted by gap to their optimum (failed last); ★ marks the lowest final loss among
    trials on the same problem (same data, shift and schedule). Where the trials have held-out
    rows, their test loss stands beside the best update's expected loss on fresh data."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row["final_loss"] is not None and row["final_loss"] < best.get(row["problem"], (float("inf"), ""))[0]:
            best[row["problem"]] = (row["final_loss"], row["trial"])
    marked = {trial for _, trial in best.values()} if len(best) < len(rows) else set()
    table = Table(title="Sweep results, by gap to the optimum (★ best on its problem)", title_justify="left")
    table.add_column("trial")
    from lora_cli.config.sweep import labels

    names = labels(list(axes))
    for axis in axes:
        table.add_column(names[axis], justify="right")
    keys = ["final_loss", "optimal_loss", "gap"]
    keys += ["final_test_loss", "population_optimal_loss"] if any(row.get("final_test_loss") is not None for row in rows) else []
    headers = {"final_loss": "final loss", "optimal_loss": "optimum", "gap": "gap", "final_test_loss": "test loss",
               "population_optimal_loss": "fresh-data optimum"}
    for column in (*(headers[k] for k in keys), ""):
        table.add_column(column, justify="right")
    order = sorted(rows, key=lambda r: (r["gap"] is None, r["gap"] if r["gap"] is not None else 0.0, r["trial"]))
    for row in order:
        numbers = [fmt_loss(row[k]) if row.get(k) is not None else "-" for k in keys]
        if row["status"] != "complete":
            numbers = [row["status"], *[""] * (len(keys) - 1)]
        table.add_row(row["trial"].split("-", 1)[0], *(str(row[a]) for a in axes), *numbers, "★" if row["trial"] in marked else "")
    return table
