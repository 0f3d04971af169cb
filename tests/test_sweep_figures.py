"""The sweep's figures hold the numbers of its rows: seeds averaged with their spread, the
optimum beside each final loss, one heatmap cell per pair of values."""

import math

from lora_cli.show.sweep_figures import curves_figure, heatmap_figure, loss_against_rank, sweep_figures, variant_series
from lora_cli.show.tables import fmt_loss

AXES = ("adapter.scaling", "adapter.rank", "finetune.seed")


def _rows():
    """scaling × rank × seed, final = rank-dependent number + seed, optimum = 1/rank; one failed."""
    rows = []
    for scaling in ("standard", "rslora"):
        for rank in (1, 2, 4):
            for seed in (0, 1, 2):
                final = (10.0 if scaling == "standard" else 5.0) / rank + seed
                rows.append({"trial": f"{scaling}-{rank}-{seed}", "status": "complete", "adapter.scaling": scaling,
                             "adapter.rank": rank, "finetune.seed": seed, "final_loss": final, "optimal_loss": 1.0 / rank})
    rows[-1] = {**rows[-1], "status": "failed", "final_loss": None, "optimal_loss": None}  # rslora, rank 4, seed 2
    return rows


def test_seeds_are_averaged_with_their_spread_and_failed_trials_left_out():
    series = variant_series(_rows(), AXES, "adapter.rank", "final_loss")
    assert list(series) == ["scaling standard", "scaling rslora"]
    standard = series["scaling standard"]
    assert [p.x for p in standard] == [1, 2, 4]
    assert [(p.mean, p.low, p.high) for p in standard] == [(11.0, 10.0, 12.0), (6.0, 5.0, 7.0), (3.5, 2.5, 4.5)]
    last = series["scaling rslora"][-1]  # seeds 0 and 1 only
    assert (last.x, last.mean, last.low, last.high) == (4, 1.75, 1.25, 2.25)


def test_the_rank_figure_draws_each_variant_and_its_optimum():
    ax = loss_against_rank(_rows(), AXES).axes[0]
    lines = {tuple(line.get_ydata()) for line in ax.get_lines()}
    assert (11.0, 6.0, 3.5) in lines and (6.0, 3.5, 1.75) in lines
    assert (1.0, 0.5, 0.25) in lines  # the optimum, dashed
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"


def test_the_heatmap_holds_the_mean_final_loss_of_each_cell():
    fig = heatmap_figure(_rows(), AXES)
    grid = fig.axes[0].get_images()[0].get_array()
    assert grid.shape == (2, 3)
    assert grid[0].tolist() == [11.0, 6.0, 3.5] and grid[1, 0] == 6.0 and grid[1, 2] == 1.75
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[2] == f"{fmt_loss(3.5)}\nopt {fmt_loss(0.25)}" and len(texts) == 6


def test_no_heatmap_unless_two_axes_are_told_apart():
    one_axis = [{**row, "adapter.scaling": "standard"} for row in _rows() if row["adapter.scaling"] == "standard"]
    assert heatmap_figure(one_axis, ("adapter.rank", "finetune.seed")) is None
    three = [{**row, "adapter.alpha": 1.0} for row in _rows()]
    assert heatmap_figure(three, (*AXES, "adapter.alpha")) is None


def test_curves_and_the_set_of_figures():
    curves = {"a": ([0, 5, 10], [4.0, 2.0, 1.0]), "b": ([0, 5, 10], [4.0, 3.0, math.nan])}
    ax = curves_figure(curves).axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()][0] == [4.0, 2.0, 1.0]
    assert set(sweep_figures(_rows(), AXES, curves)) == {"sweep_rank.png", "sweep_curves.png", "sweep_heatmap.png"}
    assert sweep_figures([{**row, "status": "failed"} for row in _rows()], AXES, {}) == {}
