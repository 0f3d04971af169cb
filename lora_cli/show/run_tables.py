"""Run folders side by side: `lora runs`' table and `lora compare`'s two tables, drawn from
the rows stages/listing.py reads out of the folders."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from lora_cli.show.tables import fmt_loss

HEADERS = {"name": "Run", "kind": "Kind", "status": "Status", "method": "Method", "rank": "Rank", "alpha": "Alpha", "init": "Init",
           "final_loss": "Train loss", "final_test_loss": "Test loss", "optimal_loss": "Optimum", "gap": "Gap", "detail": "Detail"}
LOSSES = ("final_loss", "final_test_loss", "optimal_loss", "gap")
STATUS_STYLE = {"complete": "green", "damaged": "red", "failed": "red", "running": "cyan"}


def runs_table(rows: list[dict[str, Any]], root: str, how: str) -> Table:
    """One row per run folder (named relative to `root`), in the order `how` says."""
    table = Table(title=f"Run folders in {root}/, {how}", title_justify="left")
    for key, header in HEADERS.items():
        table.add_column(header, justify="right" if key in (*LOSSES, "rank", "alpha") else "left",
                         no_wrap=key == "name")  # a folder name is what people copy: never broken
    for row in rows:
        cells = []
        for key in HEADERS:
            value = row.get(key)
            if value is None:
                cells.append("" if key == "detail" else "-")
            elif key in LOSSES:
                cells.append(fmt_loss(value))
            elif key == "status":
                cells.append(f"[{STATUS_STYLE.get(value, 'yellow')}]{value}[/]")
            else:
                cells.append(escape(f"{value:g}" if isinstance(value, float) else str(value)))
        table.add_row(*cells)
    return table


def differ_table(names: list[str], differ: dict[str, list[Any]], same: int) -> Table:
    table = Table(title=f"Config keys that differ ({len(differ)}; {same} the same)", title_justify="left")
    table.add_column("Key")
    for name in names:
        table.add_column(name, justify="right")
    for key, values in differ.items():
        table.add_row(key, *("-" if v is None else escape(str(v)) for v in values))
    return table


def results_table(names: list[str], stages: dict[str, dict[str, list[Any]]]) -> Table:
    table = Table(title="Results side by side (gap: final loss − the best any update of its kind reaches)", title_justify="left")
    table.add_column("Stage")
    table.add_column("Quantity")
    for name in names:
        table.add_column(name, justify="right")
    words = {"status": "status", "final_loss": "final loss", "final_test_loss": "test loss", "optimal_loss": "optimum",
             "gap": "gap", "seconds": "seconds"}
    for stage, shown in stages.items():
        for i, (key, values) in enumerate(shown.items()):
            cells = ["-" if v is None else fmt_loss(v) if key in LOSSES else f"{v:.2f}" if key == "seconds" else str(v) for v in values]
            table.add_row(stage if i == 0 else "", words[key], *cells, end_section=i == len(shown) - 1)
    return table
