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


def test_the_curves_are_a_panel_per_rank_with_a_legend_of_variants_not_trials():
    rows = [r for r in _rows() if r["status"] == "complete"]
    curves = {r["trial"]: ([0, 5, 10], [4.0, 2.0, r["final_loss"]]) for r in rows}
    fig = curves_figure(rows, AXES, curves)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["rank 1", "rank 2", "rank 4"]
    assert [len(ax.get_lines()) for ax in panels] == [6, 6, 5]  # both scalings × 3 seeds; one failed
    assert sorted(line.get_ydata()[-1] for line in panels[0].get_lines()) == sorted(r["final_loss"] for r in rows if r["adapter.rank"] == 1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scaling standard", "scaling rslora"]
    colours = {line.get_ydata()[-1]: line.get_color() for line in panels[0].get_lines()}
    assert colours[10.0] == colours[11.0] == colours[12.0] != colours[5.0]  # a variant's seeds share its colour
    assert set(sweep_figures(_rows(), AXES, curves)) == {"sweep_rank.png", "sweep_curves.png", "sweep_heatmap.png"}


def test_a_numerically_zero_optimum_does_not_stretch_the_rank_axis():
    rows = [{**r, "optimal_loss": 1e-10 if r["adapter.rank"] == 4 else r["optimal_loss"]} for r in _rows()]
    ax = loss_against_rank(rows, AXES).axes[0]
    low = min(r["final_loss"] for r in rows if r["final_loss"] is not None)
    bottom, top = ax.get_ylim()
    assert bottom >= low / 150 and math.log10(top / bottom) < 5
    markers = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert markers and all(y == low / 100 for line in markers for y in line.get_ydata())
    assert any("≈ 0" in t.get_text() for t in ax.get_legend().get_texts())
    assert sweep_figures([{**row, "status": "failed"} for row in _rows()], AXES, {}) == {}


def test_intruders_panel_and_the_test_loss_along_another_axis():
    """Intruder counts (and the optimum's) get a panel beside the losses when any is nonzero; plot
    x and loss "test" draw the test loss and the fresh-data optimum along that axis."""
    rows = [{**row, "intruders": row["adapter.rank"] % 3, "optimum_intruders": 1, "final_test_loss": 2 * (row["final_loss"] or 0) or None,
             "population_optimal_loss": 0.5} for row in _rows()]
    fig = loss_against_rank(rows, AXES)
    losses, counts = fig.axes
    assert counts.get_title() == "Intruder dimensions beside the optimum's"
    standard = next(bars for bars in counts.containers if bars.get_label() == "scaling standard")
    assert list(standard.lines[0].get_ydata()) == [1, 2, 1]  # ranks 1, 2, 4: rank % 3, the same for every seed
    assert len(loss_against_rank([{**r, "intruders": 0, "optimum_intruders": 0} for r in _rows()], AXES).axes) == 1
    by_seed = loss_against_rank(rows, AXES, x="finetune.seed", loss="test").axes[0]
    assert by_seed.get_xlabel() == "seed" and by_seed.get_ylabel().startswith("held-out test MSE")
    standard = next(bars for bars in by_seed.containers if bars.get_label() == "scaling standard, rank 1")
    assert list(standard.lines[0].get_ydata()) == [20.0, 22.0, 24.0]  # 2 × (10/1 + seed)
