"""Rich tables for stage records (stages/results.py). Builders return renderables; only the CLI prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from lora_cli.stages.results import ApproxRecord, MergeRecord, Parameters, StageRecord


def fmt_loss(loss: float) -> str:
    """Six decimals as the blogs print, scientific below 0.01 so small losses keep digits."""
    return f"{loss:.6f}" if abs(loss) >= 0.01 else f"{loss:.4e}"


HELD_OUT = {"test_loss": "Test loss", "source_loss": "Source loss"}  # a column each, where rows have it


def loss_table(rows: list[dict[str, Any]], unit: str = "Epoch", title: str | None = None) -> Table:
    """`Epoch | Loss | Improvement` (and `Test loss`, `Source loss` where rows have them); the
    first row is the baseline."""
    table = Table(title=title, title_justify="left")
    table.add_column(unit, justify="right")
    table.add_column("Loss", justify="right")
    table.add_column("Improvement", justify="right")
    shown = [key for key in HELD_OUT if any(row.get(key) is not None for row in rows)]
    for key in shown:
        table.add_column(HELD_OUT[key], justify="right")
    for i, row in enumerate(rows):
        improvement = "baseline" if i == 0 else f"{100 * row['improvement']:.2f}%"
        cells = [str(row[unit.lower()]), fmt_loss(row["loss"]), improvement]
        table.add_row(*cells, *(_maybe(row.get(key)) for key in shown))
    return table


def _maybe(loss: float | None) -> str:
    return "-" if loss is None else fmt_loss(loss)


def parameter_table(params: Parameters, d_in: int, d_out: int) -> Table:
    """Full d_in·d_out against what the method trains (LoRA: r·(d_in + d_out))."""
    from lora_cli.methods.registry import METHODS
    from lora_cli.methods.spec import AdapterSpec

    r, method = params.rank, params.method
    m = METHODS[method]
    table = Table(title="Parameters", title_justify="left")
    table.add_column("Update")
    table.add_column("Trainable parameters", justify="right")
    table.add_row(f"Full ({d_out} x {d_in})", f"{params.full:,}")
    terms = m.terms(AdapterSpec(r, 1.0, method=method), d_in, d_out)
    if terms is not None:  # None: it trains all of W, the Full row
        table.add_row(f"{m.label or 'LoRA'} rank {r} ({terms})", f"{params.lora:,}")
    table.add_row("Reduction", f"{100 * params.reduction:.2f}%")
    table.add_row("Compression", f"{params.compression:.2f}x")
    return table


def merge_table(report: MergeRecord) -> Table:
    table = Table(title="Merge check on the shifted data", title_justify="left")
    table.add_column("Quantity")
    table.add_column("Value", justify="right")
    table.add_row("MSE of the base alone", fmt_loss(report.baseline_loss))
    table.add_row("MSE of base + adapter", fmt_loss(report.adapter_loss))
    table.add_row("MSE of the merged weight", fmt_loss(report.final_loss))
    if report.test_loss is not None:
        table.add_row("... on the held-out test rows", fmt_loss(report.test_loss))
    if report.source_loss is not None:
        table.add_row("... on fresh rows of the source task", fmt_loss(report.source_loss))
    table.add_row("max |merged(x) - adapter(x)|", f"{report.max_abs_diff:.3e}")
    table.add_row("ΔW mean", f"{report.delta_mean:.6f}")
    std = report.delta_std
    table.add_row("ΔW std", "n/a (one element)" if std is None else f"{std:.6f}")
    return table


def matrix_table(rows: list[list[float]], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    for _ in rows[0]:
        table.add_column(justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" for v in row))
    return table


def config_table(rows: list[tuple[str, Any, str]]) -> Table:
    table = Table(title="Resolved config", title_justify="left")
    table.add_column("Key")
    table.add_column("Value", justify="right")
    table.add_column("Meaning", style="dim")
    for key, value, help_text in rows:
        table.add_row(key, str(value), help_text)
    return table


def optimum_table(report: ApproxRecord) -> Table:
    """The final loss beside the best any rank-r product can reach."""
    r = report.rank
    table = Table(title=f"Optimum (Eckart–Young): Σ_{{i>{r}}} σᵢ²/(d·k)", title_justify="left")
    table.add_column("Quantity")
    table.add_column("Value", justify="right")
    table.add_row(f"Final loss (after {report.iterations} iterations)", f"{report.final_loss:.7f}")
    table.add_row(f"Optimal rank-{r} loss", f"{report.optimal_loss:.7f}")
    table.add_row("Gap", f"{report.gap:.3e}")
    rel = report.gap_relative
    table.add_row("Gap (relative)", "n/a (optimum is 0)" if rel is None else f"{100 * rel:.4f}%")
    return table


def optimum_verdict(report: ApproxRecord) -> str:
    r, gap = report.rank, report.gap
    if abs(gap) <= 1e-6 + 1e-4 * report.optimal_loss:
        return (
            f"The plateau is the optimum: no rank-{r} product A·B can get below "
            f"{report.optimal_loss:.6f}, and training reached it."
        )
    return (
        f"Training stopped {gap:.3g} above the rank-{r} optimum; "
        "more iterations (--iterations) or another learning rate (--lr) may close the gap."
    )


def singular_values_table(sigma: list[float], rank: int) -> Table:
    total = sum(s * s for s in sigma)
    table = Table(title=f"Singular values of W (✓ kept by rank {rank})", title_justify="left")
    table.add_column("i", justify="right")
    table.add_column("σᵢ", justify="right")
    table.add_column("share of ‖W‖²", justify="right")
    table.add_column("kept", justify="center")
    for i, s in enumerate(sigma, start=1):
        kept = i <= rank
        table.add_row(str(i), f"{s:.6f}", f"{100 * s * s / total:.2f}%", "✓" if kept else "", style="bold" if kept else "dim")
    return table


def approx_config_table(d: int, k: int, r: int) -> Table:
    table = Table(title="Configuration", title_justify="left", show_header=False)
    table.add_column()
    table.add_column(justify="right")
    table.add_row("Input dimension (d)", str(d))
    table.add_row("Output dimension (k)", str(k))
    table.add_row("LoRA rank (r)", str(r))
    return table


def _values(values: list[float], shown: int = 4) -> str:
    text = ", ".join(f"{v:.3g}" for v in values[:shown])
    return (text + ", …" if len(values) > shown else text) or "-"


def subspace_tables(diag: dict[str, Any] | None) -> list[RenderableType]:
    """ΔW against the true shift and the target (core/subspace.Diagnostics as a dict)."""
    if not diag:
        return []
    k, pair = diag["rank"], (diag["shift"], diag["target"])
    table = Table(title=f"Learned ΔW against the truth T (top {k} direction{'' if k == 1 else 's'})", title_justify="left")
    table.add_column("Quantity")
    table.add_column("T = shift (θ2 − θ)ᵀ", justify="right")
    table.add_column("T = θ2ᵀ − W", justify="right")
    table.add_row("‖ΔW − T‖ / ‖T‖", *(f"{c['relative_error']:.3e}" for c in pair))
    table.add_row("T's energy captured (best)", *(f"{c['energy_captured']:.6f} ({c['best_energy']:.6f})" for c in pair))
    table.add_row("Column angles (°)", *(_values(c["column_angles"]) for c in pair))
    table.add_row("Row angles (°)", *(_values(c["row_angles"]) for c in pair))
    line = f"ΔW's singular values {_values(diag['singular_values'], 5)} (stable rank {diag['stable_rank']:.3f}); θ2ᵀ − W is the shift plus the base's own error"
    lines = [table, line]
    if diag.get("intruders") is not None:
        lines.append(f"Intruder dimensions (of W + ΔW's top 10 left singular vectors, those with |cos| < 0.5 to all of W's): "
                     f"{diag['intruders']}, against {diag['optimum_intruders']} for the best update of its kind on fresh data; "
                     f"90 % of ΔW's energy in {diag['rank_90']} direction{'' if diag['rank_90'] == 1 else 's'}")
    if diag.get("optimum_column_angle") is not None:
        lines.append(f"ΔW's top {diag['rank']} column and row spaces lie within {diag['optimum_column_angle']:.3g}° and "
                     f"{diag['optimum_row_angle']:.3g}° of the best update's on fresh data")
    return lines


def stage_tables(record: StageRecord, shape: tuple[int, int] = (0, 0)) -> list[RenderableType]:
    """Everything a command prints for one completed stage; `shape` is (d_in, d_out) of the
    layer, for the stages that train one."""
    from lora_cli.stages.results import ApproxRecord, MergeRecord

    tables = {MergeRecord: _merge_tables, ApproxRecord: _approx_tables}.get(type(record), _training_tables)  # by the record's type
    return tables(record, *shape)


def _training_tables(record: StageRecord, d_in: int, d_out: int) -> list[RenderableType]:
    what = _method(record).words(record) if _adapted(record) else "full-rank base"
    return [
        f"[bold]{record.stage}[/]: {what}, full-data MSE  ({record.seconds:.2f} s, {record.engine} engine, {record.device})",
        loss_table(record.history),
        *optimum_lines(record),
        *frontier_lines(record),
        *decay_lines(record),
        *subspace_tables(getattr(record, "subspace", None)),
        parameter_table(record.parameters, d_in, d_out),
    ]


def _adapted(record: Any) -> bool:
    """A finetune's record (it names its method), not a pretrain's."""
    return hasattr(record, "method")


def _method(record: Any) -> Any:
    from lora_cli.methods.registry import METHODS

    return METHODS[record.method]


def _spec(record: Any) -> Any:
    from lora_cli.methods.spec import AdapterSpec

    return AdapterSpec(record.rank, record.alpha, record.init, record.scaling_rule, record.lr_ratio, record.method)


def optimum_lines(record: Any) -> list[str]:
    """The final loss beside the best any allowed update reaches on the same data (float64)."""
    if record.optimal_loss is None:
        return []
    if not _adapted(record):
        return [f"Optimum {fmt_loss(record.optimal_loss)} (best any W, this data); gap {record.gap:.3e}"]
    method, spec = _method(record), _spec(record)
    lines = [f"Optimum {fmt_loss(record.optimal_loss)} (best {method.allowed(spec)}, this data); gap {record.gap:.3e}"]
    lines += [method.caveat] if method.caveat else []
    population = getattr(record, "population_optimal_loss", None)
    if population is not None:
        test = f"; this run's test loss {fmt_loss(record.final_test_loss)}" if record.final_test_loss is not None else ""
        lines.append(f"On fresh data the best {method.allowed(spec)} has expected MSE {fmt_loss(population)}{test}")
    return lines


def frontier_lines(record: Any) -> list[str]:
    """Where ΔW sits against the exact learning–forgetting frontier (population losses)."""
    frontier, rank = getattr(record, "frontier", None), getattr(record, "rank", None)
    if not frontier:
        return []
    (target, forgetting), (best, most), (base, _) = frontier["trained"], frontier["rank"][0], frontier["base"]
    return [f"Learning against forgetting (fresh rows): this ΔW's target loss {fmt_loss(target)} at forgetting {fmt_loss(forgetting)}; "
            f"the rank-{rank} frontier runs from {fmt_loss(best)} (forgetting {fmt_loss(most)}) to the base's {fmt_loss(base)} "
            f"(forgetting 0); frontier.png draws it: lora plot {record.run_dir}"]


def decay_lines(record: Any) -> list[str]:
    """Under weight decay: the objective training minimises (population loss + penalty), this
    run's beside the penalised optimum's, or why that has no closed form."""
    decay = getattr(record, "decay", None)
    if not decay:
        return []
    trained, best = decay["trained"], decay["optimum"]
    how = "an L2 penalty, so training minimises loss + penalty" if decay["coupled"] else "decoupled: AdamW minimises no fixed penalty"
    lines = [f"Weight decay {decay['weight_decay']:g} ({decay['optimizer']}: {how}); on fresh rows this run's loss "
             f"{fmt_loss(trained['loss'])} + penalty {fmt_loss(trained['penalty'])} = {fmt_loss(trained['objective'])}"]
    if best is None:
        return lines + [f"No closed form for the penalised optimum: {decay['why']}"]
    values = best.get("singular_values")
    shape = f", singular values {_values(values, 5)}" if values else (", ΔW = 0" if best["rank"] == 0 else "")
    lines.append(f"The penalised optimum: loss {fmt_loss(best['loss'])} + penalty {fmt_loss(best['penalty'])} = {fmt_loss(best['objective'])}"
                 f"{shape} ({decay['form']}); this run's excess {trained['objective'] - best['objective']:.3e}")
    return lines


def _labelled(method: str) -> str:
    """", DoRA": a method's name after an adapter's settings ("" for plain LoRA)."""
    from lora_cli.methods.registry import METHODS

    label = METHODS[method].label if method in METHODS else method
    return f", {label}" if label else ""


def _merge_tables(record: MergeRecord, d_in: int, d_out: int) -> list[RenderableType]:
    source = record.adapter_source
    imported = [] if not source else [
        f"Imported PEFT adapter {escape(source['path'])}: rank {source['rank']}, alpha {source['alpha']:g}"
        f"{', rsLoRA' if source['scaling_rule'] == 'rslora' else ''}{_labelled(source.get('method', 'lora'))}",
        *subspace_tables(record.subspace),  # the run's own adapter showed them after finetune
    ]
    return [
        f"[bold]merge[/] -> {record.run_dir}/merged.safetensors  ({record.seconds:.2f} s)",
        *imported,
        merge_table(record),
        matrix_table(record.delta_corner, "Δθ[:5, :5] = ΔWᵀ, blog layout (d_in x d_out)"),
    ]


def _approx_tables(record: ApproxRecord, d_in: int, d_out: int) -> list[RenderableType]:
    return [
        approx_config_table(d_in, d_out, record.rank),
        parameter_table(record.parameters, d_in, d_out),
        f"[bold]approx[/]: A·B vs W, MSE  ({record.seconds:.2f} s)",
        loss_table(record.history, unit="Iteration"),
        optimum_table(record),
        optimum_verdict(record),
        singular_values_table(record.singular_values, record.rank),
    ]

