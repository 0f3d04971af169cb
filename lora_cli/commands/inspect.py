"""`lora runs`, `lora validate` and `lora schema`: look at run folders and configs without training."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.options import JsonOpt, SetOpt, collect_overrides, runs_root
from lora_cli.commands.output import Output
from lora_cli.config import KINDS

Kind = Enum("Kind", {name: name for name in KINDS}, type=str)


def runs(
    root: Annotated[Optional[Path], typer.Option("--root", metavar="DIR", help="Folder holding run folders (default: runs/ or $LORA_RUNS_DIR).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List run folders, oldest first, with each stage's status and final loss.

    A stage another process is running shows as running; one whose process was stopped or
    killed shows as interrupted, with the epoch it can resume from.
    """
    from lora_cli.show import tables as report
    from lora_cli.store.run_index import list_runs, summary

    root = root or runs_root()
    summaries = [summary(run, root) for run in list_runs(root)]
    out = Output(as_json)
    out.emit({"root": str(root), "runs": summaries})
    if not summaries:
        out.note(f"No run folders in {root}/ yet; start one with: lora run configs/posit.yaml")
        return
    out.show(report.runs_table(summaries, str(root)))


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
