"""The sweep table: sorted by rank, then by gap (so gaps to different optima are not mixed),
and a gap below zero explained by the method that allows it."""

from rich.console import Console

from lora_cli.methods.dora import DoRA
from lora_cli.show.sweep_tables import summary_table


def _text(table):
    console = Console(record=True, width=300)
    console.print(table)
    return console.export_text()


def _row(trial, rank, gap, method="lora"):
    return {"trial": trial, "status": "complete", "adapter.rank": rank, "problem": "p", "method": method, "rank": rank,
            "final_loss": 1.0 + gap, "optimal_loss": 1.0, "gap": gap}


def test_rows_go_by_rank_then_by_gap():
    rows = [_row("000-a", 8, 0.5), _row("001-b", 2, 0.3), _row("002-c", 8, 0.1), _row("003-d", 2, 0.9)]
    lines = [line.split("│")[1].strip() for line in _text(summary_table(rows, ("adapter.rank",))).splitlines() if line.startswith("│")]
    assert lines == ["001", "003", "002", "000"]
    assert "by rank, then by gap" in _text(summary_table(rows, ("adapter.rank",)))


def test_a_negative_gap_says_why():
    text = _text(summary_table([_row("000-a", 2, -0.01, "dora"), _row("001-b", 2, 0.2)], ("adapter.rank",)))
    assert "A gap below 0: " + DoRA.caveat in " ".join(text.split())
    assert "A gap below 0" not in _text(summary_table([_row("000-a", 2, 0.01, "dora")], ("adapter.rank",)))


def test_plot_orders_by_its_axis_and_stars_the_lowest_test_loss():
    """plot: {x: finetune.n, loss: test}: rank, then n; the star goes by test loss, not train loss."""
    from lora_cli.config.sweep import PlotSpec

    rows = []
    for i, (n, method, train, test) in enumerate([(64, "full", 0.001, 0.12), (16, "lora", 0.2, 1.3), (64, "lora", 0.01, 0.06), (16, "full", 0.0, 1.2)]):
        rows.append(_row(f"00{i}-x", 4, train) | {"finetune.n": n, "method": method, "final_loss": train, "final_test_loss": test,
                                                  "population_optimal_loss": 0.01, "problem": str(n)})
    axes = ("finetune.n", "adapter.rank")
    text = _text(summary_table(rows, axes, plot=PlotSpec(x="finetune.n", loss="test")))
    lines = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    assert [line[1].strip() for line in lines] == ["003", "001", "000", "002"]  # n 16 (by gap), then n 64 (by gap)
    assert [line[1].strip() for line in lines if "★" in line[-2]] == ["003", "002"]  # n = 16: 1.2 < 1.3; n = 64: 0.06 < 0.12
    assert "by n, then by gap" in text and "★ lowest test loss on its problem" in " ".join(text.split())  # one rank: no "by rank"
    plain = [line.split("│") for line in _text(summary_table(rows, axes)).splitlines() if line.startswith("│")]
    assert sorted(line[1].strip() for line in plain if "★" in line[-2]) == ["000", "003"]  # by train loss: full on both


def test_intruders_stand_beside_the_optimums():
    rows = [_row("000-a", 2, 0.1) | {"intruders": 3, "optimum_intruders": 1}, _row("001-b", 4, 0.1) | {"intruders": None}]
    text = _text(summary_table(rows, ("adapter.rank",)))
    assert "intruders (optimum's)" in text and "3 (1)" in text


def test_plot_columns_add_results_columns_to_the_table():
    from lora_cli.config.sweep import PlotSpec

    rows = [_row("000-a", 2, 0.1) | {"optimum_column_angle": 12.3456789}, _row("001-b", 4, 0.2) | {"optimum_column_angle": None}]
    text = _text(summary_table(rows, ("adapter.rank",), plot=PlotSpec(columns=["optimum_column_angle"])))
    assert "columns ∠ optimum's (°)" in text and "12.35" in text
    lines = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    assert lines[1][-3].strip() == "-"
