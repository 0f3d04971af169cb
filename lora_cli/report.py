"""Rich tables for stage reports. Builders return renderables; only the CLI prints."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def fmt_loss(loss: float) -> str:
    """Six decimals as the blogs print, scientific below 0.01 so small losses keep digits."""
    return f"{loss:.6f}" if abs(loss) >= 0.01 else f"{loss:.4e}"


def loss_table(rows: list[dict[str, Any]], unit: str = "Epoch", title: str | None = None) -> Table:
    """`Epoch | Loss | Improvement`; the first row is the baseline."""
    table = Table(title=title, title_justify="left")
    table.add_column(unit, justify="right")
    table.add_column("Loss", justify="right")
    table.add_column("Improvement", justify="right")
    for i, row in enumerate(rows):
        improvement = "baseline" if i == 0 else f"{100 * row['improvement']:.2f}%"
        table.add_row(str(row[unit.lower()]), fmt_loss(row["loss"]), improvement)
    return table


def parameter_table(params: dict[str, Any], d_in: int, d_out: int) -> Table:
    """Full d_in·d_out against LoRA r·(d_in + d_out)."""
    r = params["rank"]
    table = Table(title="Parameters", title_justify="left")
    table.add_column("Update")
    table.add_column("Trainable parameters", justify="right")
    table.add_row(f"Full ({d_out} x {d_in})", f"{params['full']:,}")
    table.add_row(f"LoRA rank {r} ({r} x ({d_in} + {d_out}))", f"{params['lora']:,}")
    table.add_row("Reduction", f"{100 * params['reduction']:.2f}%")
    table.add_row("Compression", f"{params['compression']:.2f}x")
    return table


def merge_table(report: dict[str, Any]) -> Table:
    table = Table(title="Merge check on the shifted data", title_justify="left")
    table.add_column("Quantity")
    table.add_column("Value", justify="right")
    table.add_row("MSE of the base alone", fmt_loss(report["base_loss_on_shifted"]))
    table.add_row("MSE of base + adapter", fmt_loss(report["adapter_loss"]))
    table.add_row("MSE of the merged weight", fmt_loss(report["merged_loss"]))
    table.add_row("max |merged(x) - adapter(x)|", f"{report['max_abs_diff']:.3e}")
    table.add_row("ΔW mean", f"{report['delta_mean']:.6f}")
    table.add_row("ΔW std", f"{report['delta_std']:.6f}")
    return table


def matrix_table(rows: list[list[float]], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    for _ in rows[0]:
        table.add_column(justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" for v in row))
    return table


def runs_table(summaries: list[dict[str, Any]]) -> Table:
    table = Table(title="Run folders", title_justify="left")
    table.add_column("Run")
    table.add_column("Created")
    for stage in ("pretrain", "finetune", "merge"):
        table.add_column(stage)
    for s in summaries:
        cells = []
        for stage in ("pretrain", "finetune", "merge"):
            rec = s["stages"].get(stage)
            if not rec:
                cells.append("-")
            elif rec.get("status") == "complete":
                cells.append(f"[green]complete[/] {fmt_loss(rec['final_loss'])}")
            else:
                cells.append(f"[yellow]{rec.get('status', '?')}[/]")
        table.add_row(s["run_dir"], s.get("created", "?"), *cells)
    return table


def config_table(rows: list[tuple[str, Any, str]]) -> Table:
    table = Table(title="Resolved config", title_justify="left")
    table.add_column("Key")
    table.add_column("Value", justify="right")
    table.add_column("Meaning", style="dim")
    for key, value, help_text in rows:
        table.add_row(key, str(value), help_text)
    return table
