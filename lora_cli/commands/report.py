"""`lora report`: one self-contained HTML page for a run, a sweep, or runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.options import JsonOpt
from lora_cli.commands.output import Output


def report(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(metavar="RUN_DIR", help="A run or sweep folder; several: compared side by side.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="The file to write, or a folder to write report.html into (default: <folder>/report.html; for several folders, ./report.html).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one HTML page to send a colleague: every table, curve and figure, the config and the provenance.

    The page is self-contained (inline styles, script and SVG figures) and opens offline; a
    sweep's trials table sorts and filters in the page.

    Example: lora report runs/posit-20261123T101535Z

    Example: lora report runs/posit-20261123T101535Z runs/posit-20261124T090000Z --out compare.html
    """
    from lora_cli.commands.folders import open_run
    from lora_cli.errors import ConfigError
    from lora_cli.show.report import write

    if not run_dirs:
        raise ConfigError("lora report: name a run or sweep folder (lora runs lists them); several are compared side by side")
    output = Output(as_json)
    runs = [open_run(path, output, kind=None, lock="shared") for path in run_dirs]
    path = write(runs, out)
    output.emit({"report": str(path), "runs": [str(run.path) for run in runs]})
    output.note(f"Report: {path} (open it in a browser; it needs no network)")
