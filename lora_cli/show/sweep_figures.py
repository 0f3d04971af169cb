"""A sweep's figures, from its results rows and its trials' loss histories.

    sweep_rank.png      final loss (solid) and the best any rank-r update reaches (dashed)
                        against the adapter's rank, one colour per variant (log scales); beside
                        it, when any trial or its optimum has intruder dimensions, their counts
                        against the same axis
    sweep_curves.png    every trial's full-data loss against the epoch, a panel per rank (or
                        first axis), a colour per variant of the other axes
    sweep_heatmap.png   the final loss over two swept axes, the optimum under each number

A variant is one combination of the axes other than the x axis. Axes named `seed` are
replicates: their trials are averaged and the spread drawn as a bar from min to max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lora_cli.config.sweep import labels
from lora_cli.show.tables import fmt_loss

RANK = "adapter.rank"


def is_replicate(axis: str) -> bool:
    return axis.rsplit(".", 1)[-1] == "seed"


@dataclass(frozen=True)
class Point:
    """One x value of one variant: `key`'s mean over the replicates and their min and max."""

    x: Any
    mean: float
    low: float
    high: float


def factors(axes: tuple[str, ...]) -> list[str]:
    """The axes a figure tells apart (replicate axes are averaged over, unless nothing else is swept)."""
    kept = [a for a in axes if not is_replicate(a)]
    return kept or list(axes)


def variant_series(rows: list[dict[str, Any]], axes: tuple[str, ...], x_axis: str, key: str) -> dict[str, list[Point]]:
    """For each variant (its label names the other axes' values), its Points in x order;
    complete trials with a number under `key` only."""
    names, others = labels(list(axes)), [a for a in factors(axes) if a != x_axis]
    groups: dict[str, dict[Any, list[float]]] = {}
    for row in rows:
        if row["status"] == "complete" and row.get(key) is not None:
            label = ", ".join(f"{names[a]} {row[a]}" for a in others) or "all trials"
            groups.setdefault(label, {}).setdefault(row[x_axis], []).append(row[key])
    order = {value: i for i, value in enumerate(dict.fromkeys(row[x_axis] for row in rows))}
    return {
        label: [Point(x, fmean(v), min(v), max(v)) for x, v in sorted(by_x.items(), key=lambda item: order[item[0]])]
        for label, by_x in groups.items()
    }


LOSSES = {"train": ("final_loss", "optimal_loss", "final MSE", "optimum (same colour): best rank-r update", "Final loss beside the optimum"),
          "test": ("final_test_loss", "population_optimal_loss", "held-out test MSE", "optimum (same colour): best expected on fresh data",
                   "Test loss beside the best on fresh data")}


def loss_against_rank(rows: list[dict[str, Any]], axes: tuple[str, ...], x: str | None = None, loss: str = "train") -> Figure:
    """Final loss and optimum (or, `loss` "test", test loss and the fresh-data optimum) against
    `x`, by default the adapter's rank (or the first axis when rank is not swept), for each
    variant, log scales."""
    kept = factors(axes)
    x_axis = x or (RANK if RANK in kept else kept[0])
    key, best_key, y_label, best_label, title = LOSSES[loss]
    finals, optima = variant_series(rows, axes, x_axis, key), variant_series(rows, axes, x_axis, best_key)
    numeric = all(isinstance(p.x, (int, float)) and not isinstance(p.x, bool) and p.x > 0 for s in finals.values() for p in s)
    position = (lambda x: x) if numeric else {x: i for i, x in enumerate(dict.fromkeys(r[x_axis] for r in rows))}.__getitem__
    # the intruders panel when the trials were diagnosed and any of them, or its optimum, has one
    counted = any(row.get("intruders") or row.get("optimum_intruders") for row in rows if row["status"] == "complete")
    fig = Figure(figsize=(12.5 if counted else 7.5, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 2, 1) if counted else fig.add_subplot()
    if counted:
        _intruders_panel(fig.add_subplot(1, 2, 2), rows, axes, x_axis, position, numeric)
    # an optimum far below every final loss (numerically zero: the adapter can fit the shift
    # exactly) is drawn as ▼ on the axis' floor, so it cannot stretch the axis over many decades
    finals_seen = [p.low for s in finals.values() for p in s if p.low > 0]
    floor = min(finals_seen) / 100 if finals_seen else None
    below = False
    for i, (label, points) in enumerate(finals.items()):
        colour = f"C{i % 10}"
        xs = [position(p.x) for p in points]
        ax.errorbar(xs, [p.mean for p in points], yerr=_spread(points), color=colour, marker="o", markersize=4, capsize=3, label=label)
        best = optima.get(label, [])
        ys = [max(p.mean, floor) if floor else p.mean for p in best]
        ax.plot([position(p.x) for p in best], ys, color=colour, linestyle="--", linewidth=1)
        low = [position(p.x) for p in best if floor and p.mean < floor]
        if low:
            below = True
            ax.plot(low, [floor] * len(low), linestyle="none", marker="v", color=colour, markersize=6)
    ax.set_yscale("log")
    if floor:
        ax.set_ylim(bottom=floor / 1.5)
    _x_axis(ax, rows, axes, x_axis, position, numeric)
    ax.set_ylabel(f"{y_label} (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1))
    names.append(best_label)
    if below:
        handles.append(Line2D([], [], color="black", linestyle="none", marker="v"))
        names.append(f"optimum below {fmt_loss(floor)} (≈ 0: an exact fit)")
    ax.legend(handles, names, fontsize=7)
    ax.set_title(title)
    return fig


def _intruders_panel(ax: Any, rows: list[dict[str, Any]], axes: tuple[str, ...], x_axis: str, position: Any, numeric: bool) -> None:
    """Intruder dimensions (solid) and the optimum's (dashed) against the same x axis."""
    counts, optima = variant_series(rows, axes, x_axis, "intruders"), variant_series(rows, axes, x_axis, "optimum_intruders")
    for i, (label, points) in enumerate(counts.items()):
        colour = f"C{i % 10}"
        ax.errorbar([position(p.x) for p in points], [p.mean for p in points], yerr=_spread(points), color=colour, marker="o", markersize=4,
                    capsize=3, label=label)
        best = optima.get(label, [])
        ax.plot([position(p.x) for p in best], [p.mean for p in best], color=colour, linestyle="--", linewidth=1, marker="x", markersize=5)
    _x_axis(ax, rows, axes, x_axis, position, numeric)
    ax.set_ylim(bottom=-0.3, top=10.3)  # W + ΔW's top 10 directions: 0 to 10 intruders
    ax.set_ylabel("intruder dimensions (of the top 10)")
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle="--", marker="x", linewidth=1))
    names.append("the best update of its kind on fresh data (same colour)")
    ax.legend(handles, names, fontsize=7)
    ax.set_title("Intruder dimensions beside the optimum's")


def _x_axis(ax: Any, rows: list[dict[str, Any]], axes: tuple[str, ...], x_axis: str, position: Any, numeric: bool) -> None:
    """The swept key's axis, as both panels of sweep_rank.png draw it: log₂ for positive numbers,
    a tick at each value in the rows' order, the key's label."""
    if numeric:
        ax.set_xscale("log", base=2)
    ticks = list(dict.fromkeys(r[x_axis] for r in rows))
    ax.set_xticks([position(x) for x in ticks], [str(x) for x in ticks])
    ax.set_xlabel(labels(list(axes))[x_axis])


def _spread(points: list[Point]) -> list[list[float]] | None:
    if all(p.low == p.high for p in points):
        return None
    return [[p.mean - p.low for p in points], [p.high - p.mean for p in points]]


def curves_figure(rows: list[dict[str, Any]], axes: tuple[str, ...], curves: dict[str, tuple[list[int], list[float]]]) -> Figure:
    """Each trial's loss against the epoch (log scale), one panel per value of the rank (or of
    the first axis), one colour per variant of the other axes; a variant's seeds share its
    colour. The legend names the variants (not the trials), below the panels, so it stays
    small at 45 trials."""
    kept = factors(axes)
    facet = RANK if RANK in kept else kept[0]
    names, others = labels(list(axes)), [a for a in kept if a != facet]
    done = [row for row in rows if row["trial"] in curves]
    variant = lambda row: ", ".join(f"{names[a]} {row[a]}" for a in others)  # noqa: E731
    panels, variants = list(dict.fromkeys(r[facet] for r in done)), list(dict.fromkeys(variant(r) for r in done))
    cols = max(1, min(4, math.ceil(math.sqrt(len(panels)))))
    grid_rows = -(-len(panels) // cols) or 1
    fig = Figure(figsize=(1.5 + 3.1 * cols, 1.2 + 2.5 * grid_rows + 0.18 * min(len(variants), 24) / 3), layout="constrained")
    axs = list(fig.subplots(grid_rows, cols, sharex=True, sharey=True, squeeze=False).flat)
    style = lambda i: {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[i // 10 % 4]}  # noqa: E731
    for ax, value in zip(axs, panels):
        for row in (r for r in done if r[facet] == value):
            epochs, losses = curves[row["trial"]]
            ax.plot(epochs, losses, linewidth=1.1, alpha=0.85, **style(variants.index(variant(row))))
        ax.set_yscale("log")
        ax.set_title(f"{names[facet]} {value}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axs[len(panels):]:
        ax.set_visible(False)
    for ax in axs[max(0, len(panels) - cols):len(panels)]:  # the lowest panel of each column
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.supylabel("full-data MSE (log scale)", fontsize=9)
    if others and len(variants) <= 24:
        handles = [Line2D([], [], linewidth=1.5, **style(i)) for i in range(len(variants))]
        fig.legend(handles, variants, loc="outside lower center", ncol=min(len(variants), 4), fontsize=7)
    elif others:
        fig.text(0.5, 0.0, f"{len(variants)} variants of {', '.join(names[a] for a in others)}: one colour each", ha="center", fontsize=7)
    fig.suptitle(f"Loss curves of {len(done)} trials, by {names[facet]}", fontsize=10)
    return fig


def heatmap_figure(rows: list[dict[str, Any]], axes: tuple[str, ...]) -> Figure | None:
    """The final loss (mean over replicates) over exactly two swept axes, on a log colour
    scale, each cell's optimum under its number; None unless two axes are told apart."""
    kept = factors(axes)
    if len(kept) != 2:
        return None
    row_axis, col_axis = kept
    finals, optima = variant_series(rows, axes, col_axis, "final_loss"), variant_series(rows, axes, col_axis, "optimal_loss")
    names = labels(list(axes))
    row_values = list(dict.fromkeys(r[row_axis] for r in rows))
    col_values = list(dict.fromkeys(r[col_axis] for r in rows))
    grid = [[float("nan")] * len(col_values) for _ in row_values]
    best = [[None] * len(col_values) for _ in row_values]
    for i, value in enumerate(row_values):
        label = f"{names[row_axis]} {value}"
        for point in finals.get(label, []):
            grid[i][col_values.index(point.x)] = point.mean
        for point in optima.get(label, []):
            best[i][col_values.index(point.x)] = point.mean
    return _draw_heatmap(grid, best, row_values, col_values, names[row_axis], names[col_axis])


def _draw_heatmap(grid, best, row_values, col_values, row_name: str, col_name: str) -> Figure | None:
    positive = [v for line in grid for v in line if v == v and v > 0]
    if not positive:
        return None
    fig = Figure(figsize=(1.3 * len(col_values) + 2.5, 0.75 * len(row_values) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="viridis", norm=LogNorm(min(positive), max(positive)), aspect="auto")
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            if value == value:
                text = fmt_loss(value) + (f"\nopt {fmt_loss(best[i][j])}" if best[i][j] is not None else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if value < max(positive) ** 0.5 * min(positive) ** 0.5 else "black")
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    fig.colorbar(image, ax=ax, label="final MSE (log scale)")
    ax.set_title("Final loss (optimum below)")
    return fig


def sweep_figures(rows: list[dict[str, Any]], axes: tuple[str, ...], curves: dict[str, tuple[list[int], list[float]]], x: str | None = None,
                  loss: str = "train") -> dict[str, Figure]:
    """The figures the sweep's results allow, by file name (`x`, `loss`: the spec's plot:)."""
    if not any(row["status"] == "complete" for row in rows):
        return {}
    figures = {"sweep_rank.png": loss_against_rank(rows, axes, x, loss), "sweep_curves.png": curves_figure(rows, axes, curves)}
    heatmap = heatmap_figure(rows, axes)
    if heatmap is not None:
        figures["sweep_heatmap.png"] = heatmap
    return figures
