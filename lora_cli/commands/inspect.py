"""`lora runs`, `lora validate` and `lora schema`: look at run folders and configs without training."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.options import JsonOpt, SetOpt, collect_overrides, flag_option, runs_root
from lora_cli.commands.output import Output
from lora_cli.config import KINDS

Kind = Enum("Kind", {name: name for name in KINDS}, type=str)


ReverseOpt = flag_option("--reverse", "Reverse the order (with --sort: largest first).")


def runs(
    root: Annotated[Optional[Path], typer.Option("--root", metavar="DIR", help="Folder holding run folders (default: runs/ or $LORA_RUNS_DIR).")] = None,
    filters: Annotated[Optional[list[str]], typer.Option("--filter", "-f", metavar="KEY=VALUE", help="Only runs with this value: a column (method=lora, status=complete) or a config key (adapter.rank=4). Repeatable.")] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", "-s", metavar="COLUMN", help="Order by a column: gap, final_loss, final_test_loss, rank, name, … (default: oldest first).")] = None,
    reverse: ReverseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List run folders with their method, rank, losses beside the optimum, and status.

    A stage another process is running shows as running; one whose process was stopped or
    killed shows as interrupted, with the epoch it can resume from.

    Examples:

      lora runs --sort gap

      lora runs --filter method=lora --filter adapter.rank=4 --json
    """
    from lora_cli.show.run_tables import runs_table
    from lora_cli.stages.listing import columns, flat_config, matches, parse_filters, sort_rows
    from lora_cli.store.run_index import list_runs, summary

    root = root or runs_root()
    wanted = parse_filters(filters)
    summaries = [summary(run, root) for run in list_runs(root)]
    for s in summaries:
        s["columns"] = columns(s)
    dotted = any("." in key for key, _ in wanted)
    kept = [s for s in summaries if matches(s["columns"], flat_config(Path(s["run_dir"])) if dotted else None, wanted)]
    order = {id(row): s for s in kept for row in [s["columns"]]}
    rows = sort_rows([s["columns"] for s in kept], sort, reverse)
    out = Output(as_json)
    out.emit({"root": str(root), "runs": [order[id(row)] for row in rows]})
    if not summaries:
        out.note(f"No run folders in {root}/ yet; start one with: lora run configs/posit.yaml")
        return
    if not rows:
        out.note(f"None of the {len(summaries)} run folders in {root}/ has {', '.join(filters or [])}; list them all with: lora runs --root {root}")
        return
    how = (f"by {sort}" + (", descending" if reverse else "")) if sort else ("newest first" if reverse else "oldest first")
    if filters:
        how += f"; {len(rows)} of {len(summaries)} with {', '.join(filters)}"
    out.show(runs_table(rows, str(root), how))


def compare(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(metavar="RUN_DIR", help="Two or more run folders (a sweep's trials too: SWEEP_DIR/trials/<id>).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put runs side by side: the config keys that differ, then each stage's results beside its optimum.

    Example: lora compare runs/posit-20261123T101535Z runs/posit-20261124T090000Z
    """
    from lora_cli.commands.folders import open_run
    from lora_cli.errors import ConfigError
    from lora_cli.show.run_tables import differ_table, results_table
    from lora_cli.stages.listing import compare as side_by_side

    run_dirs = run_dirs or []
    if len(run_dirs) < 2:
        raise ConfigError("lora compare: give two or more run folders (lora runs lists them)")
    out = Output(as_json)
    folders = [open_run(path, out, kind=None, lock="shared") for path in run_dirs]
    found = side_by_side(folders)
    out.emit(found)
    names = [str(path) for path in run_dirs]
    if found["differ"]:
        out.show(differ_table(names, found["differ"], found["same"]))
    else:
        out.note(f"The {len(names)} runs have the same config ({found['same']} keys)")
    out.show(results_table(names, found["stages"]))


def validate(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config or sweep spec to check.")],
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a config or a sweep spec and print it resolved (defaults filled in), or every error found.

    Pipeline configs (lora run), approx configs (lora approx) and sweep specs (lora sweep: their
    trials, each checked) are told apart by their keys.
    """
    from lora_cli.show import tables as report
    from lora_cli.config.loading import describe_schema, detect_schema, load_config
    from lora_cli.config.sweep import is_sweep_file

    if is_sweep_file(config):
        return _validate_sweep(config, collect_overrides(sets, {}), Output(as_json))
    schema = detect_schema(config)
    cfg = load_config(config, collect_overrides(sets, {}), schema=schema)
    out = Output(as_json)
    out.emit(cfg.to_dict())
    values = cfg.to_dict()
    rows = []
    for key, _type, _default, help_text in describe_schema(schema):
        node = values
        for part in key.split("."):
            node = node[part]
        rows.append((key, node, help_text))
    out.show(report.config_table(rows))
    out.note(f"{config}: valid")


def _validate_sweep(path: Path, sets, out: Output) -> None:
    """A sweep spec: every trial expanded and checked; the trials listed."""
    from lora_cli.show import sweep_tables
    from lora_cli.config.sweep import load_sweep

    sweep = load_sweep(path, sets=sets)
    out.emit({"name": sweep.name, "axes": list(sweep.axes), "trials": sweep.grid()})
    out.show(sweep_tables.plan_table(list(sweep.trials), sweep.axes, {t.id: "" for t in sweep.trials}))
    out.note(f"{path}: valid, {len(sweep.trials)} trials (see their groups with: lora sweep {path} --dry-run)")


def schema(
    kind: Annotated[Kind, typer.Argument(metavar="KIND", help="pipeline (lora run, pretrain, finetune), approx or sweep.")] = Kind.pipeline,
) -> None:
    """Print a config kind's JSON Schema, so an editor can complete and check YAML configs.

    Save it: lora schema pipeline > lora-pipeline.schema.json

    Then start a config with: # yaml-language-server: $schema=lora-pipeline.schema.json
    """
    from lora_cli.config.json_schema import json_schema

    typer.echo(json.dumps(json_schema(kind.value), indent=2, ensure_ascii=False))
