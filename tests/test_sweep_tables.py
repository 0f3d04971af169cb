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
