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


HEADERS = {"final_loss": "final loss", "optimal_loss": "optimum", "gap": "gap", "final_test_loss": "test loss",
           "population_optimal_loss": "fresh-data optimum", "final_source_loss": "source loss", "intruders": "intruders (optimum's)",
           "optimum_column_angle": "columns ∠ optimum's (°)", "optimum_row_angle": "rows ∠ optimum's (°)"}
COUNTS = ("intruders",)  # whole numbers, each beside the optimum's: "2 (1)"
SPREAD = ("final_loss", "gap")  # the numbers whose spread over the seeds is shown


def summary_table(rows: list[dict[str, Any]], axes: tuple[str, ...], seeds: list[dict[str, Any]] | None = None, plot: Any = None) -> Table:
    """Trials (or, given `seeds`, the points averaged over their seeds: mean ± std, min–max, n)
    by rank, then by gap to their optimum (failed last), so that gaps to different rank-r
    optima are not mixed; ★ marks the lowest final loss among trials on the same problem (same
    data, shift and schedule). Where the trials have held-out rows, their test loss stands
    beside the best update's expected loss on fresh data. A method whose gap can be negative
    (DoRA) says why under the table. `plot` (the spec's plot:, config/sweep.PlotSpec): its x
    axis is ordered on after the rank, before the gap; its loss "test" stars the lowest test loss."""
    averaged = seeds is not None
    by = plot.x if plot is not None else None
    starred = "final_test_loss" if plot is not None and plot.loss == "test" else "final_loss"
    shown, suffix = (seeds, "_mean") if averaged else (rows, "")
    shown_axes = tuple(a for a in axes if not (averaged and a == "seed"))
    keys = ["final_loss", "optimal_loss", "gap"]
    keys += ["final_test_loss", "population_optimal_loss"] if any(row.get(f"final_test_loss{suffix}") is not None for row in shown) else []
    keys += ["final_source_loss"] if any(row.get(f"final_source_loss{suffix}") is not None for row in shown) else []
    keys += ["intruders"] if any(row.get(f"intruders{suffix}") is not None for row in shown) else []
    extra = [c for c in (plot.columns if plot is not None else []) if c not in keys and not averaged]  # per trial: no seed statistics of them
    what = f"means over {len(rows) // max(len(shown), 1)} seeds" if averaged else "each trial"
    table = _summary_columns(shown, shown_axes, keys + extra, averaged, what, by if by in shown_axes else None, starred)
    marked = _best(shown, suffix, starred)

    def order(i: int) -> tuple:
        gap, then = shown[i].get(f"gap{suffix}"), shown[i].get(by) if by in shown_axes else None
        return (gap is None, shown[i].get("rank") or 0, then if isinstance(then, (int, float)) else 0, gap if gap is not None else 0.0, i)

    for i in sorted(range(len(shown)), key=order):
        row = shown[i]
        cells = _mean_cells(row, keys) if averaged else _trial_cells(row, keys) + [_plain(row.get(c)) for c in extra]
        label = " ".join(t.split("-", 1)[0] for t in row["trials"].split()) if averaged else row["trial"].split("-", 1)[0]
        table.add_row(label, *(str(row[a]) for a in shown_axes), *cells, "★" if i in marked else "")
    if any((row.get(f"gap{suffix}") or 0.0) < 0 for row in shown):
        table.caption, table.caption_justify = "A gap below 0: " + "; ".join(sorted(_caveats(shown))), "left"
    return table


def _summary_columns(shown: list[dict[str, Any]], axes: tuple[str, ...], keys: list[str], averaged: bool, what: str, by: str | None,
                     starred: str) -> Table:
    from lora_cli.config.sweep import labels

    ranks = {row.get("rank") for row in shown if row.get("rank") is not None}
    then = f"by {labels(list(axes))[by]}, then " if by else ""
    order = f"by rank, then {then}by gap to the rank's optimum" if len(ranks) > 1 else f"{then}by gap to the optimum"
    star = "★ best on its problem" if starred == "final_loss" else f"★ lowest {HEADERS[starred]} on its problem"
    table = Table(title=f"Sweep results ({what}), {order} ({star})", title_justify="left")
    table.add_column("trials" if averaged else "trial")
    names = labels(list(axes))
    for axis in axes:
        table.add_column(names[axis], justify="right")
    if averaged:
        table.add_column("n", justify="right")
    for key in keys:
        spread = averaged and key in SPREAD
        table.add_column(HEADERS.get(key, key) + (" (mean ± std)" if spread else ""), justify="right")
        if spread:
            table.add_column(f"{HEADERS[key]} min–max", justify="right")
    table.add_column("", justify="right")
    return table


def _best(shown: list[dict[str, Any]], suffix: str, key: str) -> set[int]:
    """The rows with the lowest `key` on their problem (none when every row is its own)."""
    best: dict[str, tuple[float, int]] = {}
    for i, row in enumerate(shown):
        loss = row.get(f"{key}{suffix}")
        if loss is not None and loss < best.get(row["problem"], (float("inf"), -1))[0]:
            best[row["problem"]] = (loss, i)
    return {i for _, i in best.values()} if len(best) < len(shown) else set()


def _trial_cells(row: dict[str, Any], keys: list[str]) -> list[str]:
    if row["status"] != "complete":
        return [row["status"], *[""] * (len(keys) - 1)]
    return [_count(row, k, "") if k in COUNTS else fmt_loss(row[k]) if row.get(k) is not None else "-" for k in keys]


def _plain(value: Any) -> str:
    """A results.csv value as the table shows an extra column: 4 significant digits, "-" for none."""
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _count(row: dict[str, Any], key: str, suffix: str) -> str:
    """A count beside the optimum's, "2 (1)"; means to one decimal, "1.5 (1.0)"."""
    value, best = row.get(f"{key}{suffix}"), row.get(f"optimum_{key}{suffix}")
    if value is None:
        return "-"
    shown = (lambda v: f"{v:.1f}") if suffix else str  # noqa: E731
    return f"{shown(value)} ({shown(best) if best is not None else '-'})"


def _mean_cells(row: dict[str, Any], keys: list[str]) -> list[str]:
    """n, then each key's mean (± std, and min–max, for SPREAD's) over the seeds."""
    width = 1 + len(keys) + sum(k in SPREAD for k in keys)
    if row["n"] == 0:
        return ["0", "failed", *[""] * (width - 2)]
    cells = [str(row["n"]) + ("" if row["n"] == row["of"] else f" of {row['of']}")]
    for key in keys:
        mean = row.get(f"{key}_mean")
        if key in COUNTS:
            cells.append(_count(row, key, "_mean"))
            continue
        cells.append("-" if mean is None else fmt_loss(mean) + (f" ± {fmt_loss(row[f'{key}_std'])}" if key in SPREAD and row.get(f"{key}_std") is not None else ""))
        if key in SPREAD:
            low, high = row.get(f"{key}_min"), row.get(f"{key}_max")
            cells.append("-" if low is None else f"{fmt_loss(low)} – {fmt_loss(high)}")
    return cells


def _caveats(rows: list[dict[str, Any]]) -> set[str]:
    """Why a method's final loss can end below its optimum, for the methods in `rows`."""
    from lora_cli.methods.registry import METHODS

    return {METHODS[row["method"]].caveat for row in rows if row.get("method") in METHODS and METHODS[row["method"]].caveat} or {
        "the final loss is below the optimum by rounding (float32 training against a float64 optimum)"}
