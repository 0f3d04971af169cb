"""Tables for bench_posit.py: per-epoch times, ratios, the GEMM limit and the issue's targets."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.1f}x" if num and den else "-"


def epoch_table(results: dict) -> Table:
    table = Table(title="Seconds per training epoch (same data, init and batches)", title_justify="left")
    for col in ("stage", "variant", "s/epoch", "naive ÷ this", "this ÷ fast", "peak RSS MB", "final MSE"):
        table.add_column(col, justify="left" if col in ("stage", "variant") else "right")
    for stage, variants in results["stages"].items():
        naive, fast = variants["naive"].get("per_epoch"), variants["fast"].get("per_epoch")
        for name, m in variants.items():
            if "skipped" in m:
                table.add_row(stage, name, "skipped", "", "", "", m["skipped"])
                continue
            t = m["per_epoch"]
            table.add_row(stage, name, f"{t:.4f}", _ratio(naive, t), _ratio(t, fast), f"{m['peak_rss_mb']:.0f}", f"{m['final_loss']:.4g}")
    return table


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of the speed issue that this run measured."""
    st, gemm = results["stages"], results["gemm"]
    ft, pre = st["finetune"], st["pretrain"]
    rows = []
    speedup = ft["naive"]["per_epoch"] / ft["fast"]["per_epoch"]
    rows.append(("finetune ≥ 40x faster per epoch than the blog's formulation", f"{speedup:.1f}x", speedup >= 40))
    if "per_epoch" in ft.get("peft", {}):
        vs_peft = ft["peft"]["per_epoch"] / ft["fast"]["per_epoch"]
        rows.append(("finetune ≥ 15x faster per epoch than PEFT's LoRA layer", f"{vs_peft:.1f}x", vs_peft >= 15))
    else:
        rows.append(("finetune ≥ 15x faster per epoch than PEFT's LoRA layer", "peft not installed", None))
    over = pre["fast"]["per_epoch"] / gemm["limit_per_epoch"]
    rows.append(("pretrain within 1.3x of the GEMM limit", f"{over:.2f}x of {gemm['limit_per_epoch']:.3f} s/epoch ({gemm['gflops']:.1f} GFLOP/s)", over <= 1.3))
    whole = results.get("whole")
    if whole:
        w = whole["naive"]["seconds"] / whole["lora"]["seconds"]
        rows.append(("whole `lora run configs/posit.yaml` ≥ 3.5x faster than the naive port",
                     f"{w:.2f}x ({whole['lora']['seconds']:.1f} s vs {whole['naive']['seconds']:.1f} s)", w >= 3.5))
        rss_ok = whole["lora"]["peak_rss_mb"] <= whole["naive"]["peak_rss_mb"]
        rows.append(("peak RSS no higher than the naive port's",
                     f"{whole['lora']['peak_rss_mb']:.0f} MB vs {whole['naive']['peak_rss_mb']:.0f} MB", rss_ok))
    return rows


def targets_table(results: dict) -> Table:
    table = Table(title="Targets", title_justify="left")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met", justify="center")
    for target, measured, met in targets(results):
        table.add_row(target, measured, {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[met])
    return table


def scaling_table(per_epoch: dict[str, float]) -> Table:
    table = Table(title="Fast finetune, seconds per epoch (n = 10000, b = 128; d_in = d_out = d)", title_justify="left")
    table.add_column("d", justify="right")
    ranks = sorted({int(k.split("x")[1]) for k in per_epoch})
    for r in ranks:
        table.add_column(f"r = {r}", justify="right")
    for d in sorted({int(k.split("x")[0]) for k in per_epoch}):
        table.add_row(str(d), *(f"{per_epoch[f'{d}x{r}']:.4f}" for r in ranks))
    return table


def show(results: dict) -> None:
    console = Console()
    console.print(epoch_table(results))
    console.print(targets_table(results))
    if "scaling" in results:
        console.print(scaling_table(results["scaling"]))
