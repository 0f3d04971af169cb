"""PNG figures for run folders, drawn with matplotlib's object API (no pyplot, no display).

Figure builders take plain data and return a `Figure`; `plot_run` loads a run
folder, builds its figures and writes them atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lora_cli.errors import RunError
from lora_cli.store.files import atomic_write
from lora_cli.stages import results
from lora_cli.config.stages import ADAPTED
from lora_cli.stages.kinds import APPROX, SHIFT, TRAINED, run_config
from lora_cli.stages.results import Parameters
from lora_cli.store.run_folder import RunFolder

KEPT, DROPPED = "#d62728", "#b0b0b0"


def loss_curves(curves: dict[str, tuple[list[int], list[float]]], unit: str, optimum: float | None = None) -> Figure:
    """Loss against `unit` on a log scale, one line per curve, optionally the optimum as a line."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for label, (xs, ys) in curves.items():
        trained = label.removesuffix(" (test)")  # a held-out curve shares its training curve's colour, dashed
        style = {"linestyle": "--", "marker": "s", "color": colors.get(trained)} if trained != label else {"marker": "o"}
        (line,) = ax.plot(xs, ys, markersize=3.5, label=label, **style)
        colors.setdefault(label, line.get_color())
    if optimum is not None and optimum > 0:
        ax.axhline(optimum, color=KEPT, linestyle="--", label=f"optimum (Eckart–Young) = {optimum:.6f}")
    ax.set_yscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("MSE (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Training loss" + (" and held-out test loss (dashed)" if any(k.endswith(" (test)") for k in curves) else ""))
    return fig


def frontier_figure(curves: dict[str, list[list[float]]], points: dict[str, tuple[list[float], str]], base: list[float], title: str) -> Figure:
    """Target loss against forgetting: each frontier curve ([L_t, F] pairs, λ from 0 up), the
    base (Δ = 0) and each trained update as a point ([L_t, F], and the curve it belongs to,
    whose colour it takes) on the same axes."""
    fig = Figure(figsize=(8.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    colour = {label: f"C{i % 10}" for i, label in enumerate(curves)}
    for label, curve in curves.items():
        ax.plot([f for _, f in curve], [lt for lt, _ in curve], color=colour[label], linestyle="-", linewidth=1.2, alpha=0.8, label=label)
    ax.plot([base[1]], [base[0]], marker="s", color="black", linestyle="none", label="the base (no update)")
    for label, ((lt, f), curve) in points.items():
        ax.plot([f], [lt], marker="o", markersize=7, markeredgecolor="black", linestyle="none", color=colour.get(curve, "black"), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("forgetting F(ΔW) = tr(ΔW·Σ_s·ΔWᵀ)/d_out")
    ax.set_ylabel("target loss on fresh rows (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no point hidden
    ax.set_title(title)
    return fig


def heatmaps(panels: dict[str, torch.Tensor], title: str, shared_scale: bool = True) -> Figure:
    """Side-by-side heatmaps on symmetric colour scales: one shared scale so values compare
    across panels, or one per panel when they differ by orders of magnitude."""
    fig = Figure(figsize=(4.6 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    shared = max(p.abs().max().item() for p in panels.values()) or 1.0
    for ax, (label, matrix) in zip(axes, panels.items(), strict=True):
        vmax = shared if shared_scale else (matrix.abs().max().item() or 1.0)
        image = ax.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(label)
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.85)
    if shared_scale:
        fig.colorbar(image, ax=list(axes), shrink=0.85)
    fig.suptitle(title)
    return fig


def singular_value_bars(sigma: list[float], kept: int, title: str, log: bool = False) -> Figure:
    """σᵢ as bars; the first `kept` highlighted."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    index = list(range(1, len(sigma) + 1))
    colours = [KEPT if i <= kept else DROPPED for i in index]
    ax.bar(index, sigma, color=colours)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("i")
    ax.set_ylabel("σᵢ" + (" (log scale)" if log else ""))
    ax.set_xticks(index if len(index) <= 25 else index[:: max(1, len(index) // 20)])
    ax.legend(handles=[Patch(color=KEPT, label=f"kept (i ≤ {kept})"), Patch(color=DROPPED, label="dropped")])
    ax.set_title(title)
    return fig


def spectra(series: dict[str, list[float]], kept: int, title: str) -> Figure:
    """Several spectra side by side as grouped bars on a log scale; i ≤ `kept` shaded."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for j, (label, sigma) in enumerate(series.items()):
        index = [i + 1 + (j - (len(series) - 1) / 2) * width for i in range(len(sigma))]
        ax.bar(index, [max(v, 1e-12) for v in sigma], width=width, label=label)
    ax.axvspan(0.5, kept + 0.5, color=KEPT, alpha=0.08, label=f"the adapter's rank ({kept})")
    ax.set_yscale("log")
    ax.set_xlabel("i")
    ax.set_ylabel("σᵢ (log scale)")
    count = max(len(sigma) for sigma in series.values())
    ax.set_xticks(range(1, count + 1, 1 if count <= 25 else count // 20))
    ax.legend()
    ax.set_title(title)
    return fig


def parameter_bars(params: Parameters) -> Figure:
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot()
    labels = ["full update", f"LoRA rank {params.rank}"]
    bars = ax.bar(labels, [params.full, params.lora], color=[DROPPED, KEPT])
    ax.bar_label(bars, labels=[f"{params.full:,}", f"{params.lora:,}"])
    ax.set_ylabel("trainable parameters")
    ax.set_title(f"{100 * params.reduction:.1f}% fewer parameters ({params.compression:.2f}x)")
    return fig


def figures_of(run: RunFolder) -> dict[str, Figure]:
    """Every figure the run's completed stages allow, by file name."""
    return {"approx": _approx_figures, "sweep": _sweep_figures}.get(run.kind, _pipeline_figures)(run)


def plot_run(run: RunFolder, out_dir: Path | None = None) -> list[Path]:
    """Write every figure that the run's completed stages allow; returns the paths."""
    out_dir = Path(out_dir) if out_dir is not None else run.path
    figures = figures_of(run)
    if not figures:
        raise RunError(f"{run.path}: no completed stage to plot yet; run a stage first")
    paths = []
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        path = out_dir / name
        atomic_write(path, buffer.getvalue())
        paths.append(path)
    if out_dir.resolve() == run.path.resolve():  # re-running a stage they draw deletes them
        drawn = [s for s in ("approx", *TRAINED, "sweep") if run.stage(s).get("status") == "complete"]  # what they draw (never the merge)
        run.record_figures({name: drawn for name in figures})
    return paths


def _curve(rows: list[dict[str, Any]], stage: str, unit: str, metric: str = "loss") -> tuple[list[int], list[float]]:
    picked = [r for r in rows if r["stage"] == stage and r.get(metric) is not None]
    return [r[unit] for r in picked], [r[metric] for r in picked]


def _approx_figures(run: RunFolder) -> dict[str, Figure]:
    run.require_complete("approx", f"run `lora approx --run-dir {run.path} --force` again")
    rec = results.load(run, "approx")
    tensors = run.load_tensors(APPROX)
    target, product = tensors["target"], tensors["A"] @ tensors["B"]
    xs, ys = _curve(rec.history, "approx", "iteration")
    xs, ys = xs + [rec.iterations], ys + [rec.final_loss]
    r = rec.rank
    return {
        "approx_loss.png": loss_curves({f"A·B, rank {r}": (xs, ys)}, "iteration", rec.optimal_loss),
        "approx_matrices.png": heatmaps({"W (target)": target, f"A·B (rank {r})": product, "W − A·B": target - product}, "Target, approximation and error"),
        "approx_singular_values.png": singular_value_bars(rec.singular_values, r, f"Singular values of W: rank {r} keeps the first {r}"),
        "approx_parameters.png": parameter_bars(rec.parameters),
    }


def _pipeline_figures(run: RunFolder) -> dict[str, Figure]:
    done = [s for s in TRAINED if run.stage(s).get("status") == "complete"]
    if not done:
        return {}
    rows = run.metrics()
    curves = {s: _curve(rows, s, "epoch") for s in done}
    curves |= {f"{s} (test)": test for s in done if (test := _curve(rows, s, "epoch", "test_loss"))[0]}
    figures = {"pipeline_loss.png": loss_curves(curves, "epoch")}
    if ADAPTED in done:  # the adapter on the base
        from lora_cli.stages.pipeline import load_base

        cfg = run_config(run)
        base = load_base(run, cfg)
        delta, label, r = _learned_delta(run, cfg, base)
        true_shift = run.load_tensors(SHIFT)["true_delta"]  # (d_out, d_in), stored by finetune
        panels = {label: delta, "error ΔW − (θ2 − θ)ᵀ": delta - true_shift}
        figures["delta_heatmap.png"] = heatmaps(panels, f"Learned update vs the true shift (rank {r})", shared_scale=False)
        frontier = run.stage(ADAPTED).get("frontier")
        if frontier:  # finetune.frontier: the exact frontier, as recorded
            r = run.stage(ADAPTED).get("rank")
            figures["frontier.png"] = frontier_figure({f"rank-{r} frontier": frontier["rank"], "full-rank frontier": frontier["full"]},
                                                      {"this run's ΔW": (frontier["trained"], f"rank-{r} frontier")}, frontier["base"],
                                                      "Learning against forgetting: the exact frontier and this run")
        diag = _stored_subspace(run)
        if diag:  # the diagnostics its record holds (none when finetune.subspace was off)
            shift, target = diag["shift"], diag["target"]
            series = {"learned ΔW": diag["singular_values"], "true shift (θ2 − θ)ᵀ": shift["singular_values"], "θ2ᵀ − W": target["singular_values"]}
            angle = f"; angle to the shift {shift['column_angles'][0]:.3g}°" if shift["column_angles"] and shift["column_angles"][0] is not None else ""
            figures["delta_singular_values.png"] = spectra(series, r, f"Spectra: what the adapter learned and what it should{angle}")
    return figures


def _stored_subspace(run: RunFolder) -> dict[str, Any] | None:
    """The subspace diagnostics of the ΔW the run ends with, as recorded: the merge's for an
    imported adapter (lora merge --adapter), else the finetune's."""
    merge = run.stage("merge")
    if merge.get("status") == "complete" and merge.get("adapter_source"):
        return merge.get("subspace")
    return run.stage("finetune").get("subspace")


def _learned_delta(run: RunFolder, cfg: Any, base: torch.Tensor) -> tuple[torch.Tensor, str, int]:
    """(ΔW, its panel title, its rank): the imported adapter's in merged.safetensors after
    `lora merge --adapter`, else the run's own adapter's, titled by its scaling rule."""
    from lora_cli.methods.registry import method_of
    from lora_cli.stages.kinds import MERGED
    from lora_cli.stages.trained_files import load_trained, stored_spec

    merge = run.stage("merge")
    source = merge.get("adapter_source") if merge.get("status") == "complete" else None
    if source:
        return run.load_tensors(MERGED)["weight"] - base, "imported adapter's ΔW = W' − W", int(source["rank"])
    spec = stored_spec(cfg)
    method = method_of(spec)
    return method.delta(base, spec, load_trained(run, cfg)), method.delta_title(spec), spec.rank


def _sweep_figures(run: RunFolder) -> dict[str, Figure]:
    """The sweep's figures from its trials as they stand (complete trials only)."""
    from lora_cli.config.sweep import load_sweep
    from lora_cli.stages.kinds import LAYOUTS
    from lora_cli.stages.sweep_results import rows
    from lora_cli.store.run_folder import CONFIG
    from lora_cli.show.sweep_figures import sweep_figures

    sweep = load_sweep(run.path / CONFIG, stored=True)
    table, children = rows(run, sweep), run.children(LAYOUTS)
    curves, frontiers = {}, {}
    for row in table:
        child = children.get(f"trials/{row['trial']}")
        if row["status"] == "complete" and child is not None:  # a trial not registered yet: sweep --resume registers it
            curves[row["trial"]] = _curve(child.metrics(), "finetune", "epoch")
            if child.stage(ADAPTED).get("frontier"):
                frontiers[row["trial"]] = (row, child.stage(ADAPTED)["frontier"])
    figures = sweep_figures(table, sweep.axes, curves, sweep.plot.x, sweep.plot.loss)
    if frontiers:
        figures["sweep_frontier.png"] = _sweep_frontier(frontiers, sweep.axes)
    return figures


def _sweep_frontier(frontiers: dict[str, tuple[dict[str, Any], dict[str, Any]]], axes: tuple[str, ...]) -> Figure:
    """Every trial on the exact frontiers of the first problem's trials (one curve per rank, and
    full rank); trials on another problem (other data or shift) have other frontiers, left out."""
    from lora_cli.config.sweep import labels
    from lora_cli.methods.registry import METHODS

    first = next(iter(frontiers.values()))[0]["problem"]
    shown = {t: (row, f) for t, (row, f) in frontiers.items() if row["problem"] == first}
    names = labels(list(axes))
    curves = {f"rank-{row['rank']} frontier": f["rank"] for row, f in sorted(shown.values(), key=lambda rf: rf[0]["rank"] or 0)
              if not METHODS[row["method"]].full_rank}  # full fine-tuning's rank only sizes diagnostics
    curves["full-rank frontier"] = next(iter(shown.values()))[1]["full"]
    full = {row["trial"] for row, _ in shown.values() if METHODS[row["method"]].full_rank}  # the full-rank frontier bounds them
    points = {", ".join(f"{names[a]} {row[a]}" for a in axes): (f["trained"], "full-rank frontier" if row["trial"] in full else f"rank-{row['rank']} frontier")
              for row, f in shown.values()}
    title = f"{len(shown)} trials on the exact learning–forgetting frontier" + (f" ({len(frontiers) - len(shown)} on other problems left out)"
                                                                               if len(shown) < len(frontiers) else "")
    return frontier_figure(curves, points, next(iter(shown.values()))[1]["base"], title)
