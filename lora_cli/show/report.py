"""`lora report`: a run, a sweep, or runs compared, as one self-contained HTML file.

Every number comes from the folders' typed records, drawn by the terminal's own tables
(show/tables.py, show/sweep_tables.py, show/run_tables.py rendered to HTML) and figures
(show/figures.py as SVG); the sweep's results table sorts and filters in the page. Nothing
is computed here, and the page requests nothing: CSS, script and figures are inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.show import html
from lora_cli.show.tables import fmt_loss

LOSS = ("final_loss", "final_test_loss", "optimal_loss", "gap", "population_optimal_loss", "baseline_loss", "final_source_loss")


def report(runs: list[Any], generated: str) -> str:
    """The page for one run or sweep, or for several runs side by side."""
    from lora_cli import __version__

    if len(runs) == 1:
        run = runs[0]
        title = f"lora {run.kind}: {run.path.name}"
        sections = sweep_sections(run) if run.kind == "sweep" else run_sections(run)
    else:
        title = f"lora: {len(runs)} runs compared"
        sections = compare_sections(runs)
    return html.page(title, f"{', '.join(str(r.path) for r in runs)} · report by lora {__version__} at {generated}", sections)


def run_sections(run: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """A pipeline or approx run: its stages' tables, curves and figures, config, provenance."""
    from lora_cli.show.tables import stage_tables
    from lora_cli.stages import kinds, results

    cfg = kinds.run_config(run)
    shape = (cfg.data.d_in, cfg.data.d_out) if hasattr(cfg, "data") else (cfg.d_in, cfg.d_out)
    done = [s for s in kinds.KINDS[run.kind].layout.stages if run.stage(s).get("status") == "complete"]
    tables = "".join(f"<h3>{html.esc(stage)}</h3>" + html.terminal(*stage_tables(results.load(run, stage), shape)) for stage in done)
    name = f"{prefix}{run.path.name}: " if prefix else ""
    return [
        (f"{prefix}results", f"{name}Results beside the optimum", tables or '<p class="note">No stage is complete yet.</p>'),
        (f"{prefix}figures", f"{name}Curves and figures", _figures(run)),
        (f"{prefix}config", f"{name}Config (resolved)", f'<pre class="term">{html.esc((run.path / kinds.CONFIG).read_text())}</pre>'),
        (f"{prefix}provenance", f"{name}Provenance", _provenance(run)),
    ]


def sweep_sections(run: Any) -> list[tuple[str, str, str]]:
    """A sweep: its trials in a table that sorts and filters, the seeds' aggregates, the
    terminal's summary, the figures, the spec and the provenance of every trial's files."""
    from lora_cli.config.sweep import labels, load_sweep
    from lora_cli.show.sweep_tables import summary_table
    from lora_cli.stages.kinds import LAYOUTS
    from lora_cli.stages.sweep_results import SEED, by_seed, rows
    from lora_cli.store.run_folder import CONFIG

    sweep = load_sweep(run.path / CONFIG, stored=True)
    table = rows(run, sweep)
    names = labels(list(sweep.axes))
    record = [("method", "method"), *((("rank", "rank"),) if "adapter.rank" not in sweep.axes else ())]
    columns = [("trial", "trial"), ("status", "status"), *((a, names[a]) for a in sweep.axes), *record,
               ("final_loss", "final loss"), ("optimal_loss", "optimum"), ("gap", "gap"), ("gap_relative", "gap ÷ optimum"),
               ("final_test_loss", "test loss"), ("population_optimal_loss", "fresh-data optimum"), ("final_source_loss", "source loss"),
               ("intruders", "intruders"), ("optimum_intruders", "optimum's intruders"), ("engine", "engine"), ("error", "error")]
    shown = {key: fmt_loss for key in LOSS} | {"gap_relative": lambda v: f"{v:.3g}"}
    sections = [("trials", f"Trials ({len(table)})", html.results_table("trials-table", columns, table, shown))]
    if SEED in sweep.axes:
        sections.append(("seeds", "Seeds aggregated", html.terminal(summary_table(table, sweep.axes, by_seed(table, sweep.axes), sweep.plot))))
    sections.append(("summary", "As the terminal shows it", html.terminal(summary_table(table, sweep.axes, plot=sweep.plot))))
    sections.append(("figures", "Figures", _figures(run)))
    sections.append(("config", "Sweep spec (self-contained)", f'<pre class="term">{html.esc((run.path / CONFIG).read_text())}</pre>'))
    children = run.children(LAYOUTS)
    files = "".join(f"<h3>{html.esc(rel)}</h3>" + _files(child.manifest()) for rel, child in children.items())
    sections.append(("provenance", "Provenance", _provenance(run) + files))
    return sections


def compare_sections(runs: list[Any]) -> list[tuple[str, str, str]]:
    """Runs side by side (lora compare's two tables), then each run's own sections."""
    from lora_cli.show.run_tables import differ_table, results_table
    from lora_cli.stages.listing import compare

    found = compare(runs)
    names = [run.path.name for run in runs]
    tables = html.terminal(differ_table(names, found["differ"], found["same"]), results_table(names, found["stages"]))
    sections = [("compare", "Side by side", tables)]
    for i, run in enumerate(runs):
        sections += run_sections(run, prefix=f"run{i + 1}-")
    return sections


def _figures(run: Any) -> str:
    from lora_cli.show.figures import figures_of

    figures = figures_of(run)
    if not figures:
        return '<p class="note">No figure yet: no stage is complete.</p>'
    return "".join(f"<h3>{html.esc(name.removesuffix('.png'))}</h3>" + html.svg(fig) for name, fig in figures.items())


def _provenance(run: Any) -> str:
    manifest = run.manifest()
    versions = manifest.get("versions", {})
    pairs = [("run folder", run.path.resolve()), ("kind", manifest.get("kind")), ("created", manifest.get("created")),
             ("seed", manifest.get("seed")), *((f"{stage} seed", rec["seed"]) for stage, rec in manifest.get("stages", {}).items() if "seed" in rec),
             *((f"{stage} finished", rec.get("finished")) for stage, rec in manifest.get("stages", {}).items()),
             ("lora", versions.get("lora")), ("torch", versions.get("torch")), ("python", versions.get("python")),
             ("machine", versions.get("machine", "not recorded (a run made before lora recorded it)"))]
    return html.key_values([(k, v) for k, v in pairs if v is not None]) + "<h3>Files (SHA-256)</h3>" + _files(manifest)


def _files(manifest: dict[str, Any]) -> str:
    return html.key_values([(rel, entry["sha256"]) for rel, entry in manifest.get("files", {}).items()], hashes=True)


def default_path(runs: list[Any]) -> Path:
    """Where the report goes without --out: the folder's report.html; for several runs, report.html here."""
    return runs[0].path / "report.html" if len(runs) == 1 else Path("report.html")


def write(runs: list[Any], out: Path | None = None) -> Path:
    """Write the report atomically (default: default_path; into a folder given: its
    report.html); one inside its run's folder is
    noted as a figure of the stages it shows, so re-running one of them deletes it."""
    from lora_cli.store.files import atomic_write, utc_now

    path = Path(out) if out is not None else default_path(runs)
    if path.is_dir():  # --out DIR: report.html inside it
        path = path / "report.html"
    atomic_write(path, report(runs, utc_now()).encode())
    if len(runs) == 1 and path.resolve() == (runs[0].path / "report.html").resolve():
        run = runs[0]
        drawn = [s for s, rec in run.manifest().get("stages", {}).items() if rec.get("status") == "complete"]
        run.record_figures({"report.html": drawn})
    return path
