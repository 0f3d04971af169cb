"""The `lora` command line. Commands live in lora_cli.commands; this file wires them
up and is the one place where errors become exit codes and one-line messages."""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from lora_cli import __version__
from lora_cli.store import locking
from lora_cli.commands import approx, export, inspect, pipeline, plot, report, sweep
from lora_cli.errors import Interrupted, LoraError, signal_name


class LoraGroup(TyperGroup):
    """Runs a command and turns every expected failure into one line on stderr.

    Exit codes: 0 success, 1 runtime failure, 2 usage or config error, 130 interrupted
    (Ctrl-C), 143 terminated (SIGTERM). Run-folder locks are released as the command ends.
    """

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))

    def resolve_command(self, ctx: Any, args: Any) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):  # started by torchrun
            from lora_cli.runtime.distributed import refuse_unshared

            refuse_unshared(command.name)
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # outside any stage (stages record and word their own)
            raise Interrupted(f"interrupted by {signal_name(exc)}", signal_name(exc)) from None

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            # one name in usage lines and hints, however it was started (lora, python -m lora_cli, tests)
            rv = super().main(args=args, prog_name="lora", complete_var=complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # usage errors: bad option, missing argument, …
            command = exc.ctx.command_path if getattr(exc, "ctx", None) else "lora"
            # typer words a bad choice "Value error, 'x' is not one of …": the first two words say nothing
            message = exc.format_message().replace("Value error, ", "")
            _fail(f"{message} (see: {command} --help)", exc.exit_code)
        except typer.Abort:
            _fail("interrupted", 130)
        except LoraError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:  # the system refused: a full disk, a name too long, a closed or full stdout, …
            _fail(_os_problem(exc), 1)
        except Exception as exc:  # a bug: say so in one line unless asked for the traceback
            if os.environ.get("LORA_DEBUG"):
                raise
            _fail(f"internal error ({type(exc).__name__}: {exc}); this is a bug in lora. Rerun with LORA_DEBUG=1 for the traceback", 1)
        finally:
            locking.release_all()
        sys.exit(rv if isinstance(rv, int) else 0)


def _plain_help_option(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # a flag takes no value: no <bool> beside it
    return option


class LoraCommand(TyperCommand):
    """Usage lines name arguments as CONFIG and [RUN_DIR], the way --help names them."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {config}, which reads like a set of choices
        return [re.sub(r"^\{(.+)\}$", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


def _os_problem(exc: OSError) -> str:
    """One line for an OSError lora did not expect: the file (a long name cut short) and why."""
    if exc.filename is None:
        what = "standard output" if _stdout_broken() else "the system"
        return f"{what} refused: {exc.strerror or exc}"
    name = os.fsdecode(exc.filename)
    shown = name if len(name) <= 120 else f"{name[:60]}…{name[-40:]}"
    return f"{shown}: {exc.strerror or exc}; check the path, its permissions and the free space"


def _stdout_broken() -> bool:
    """True when stdout cannot take output (a full disk, a closed pipe); from then on it goes
    nowhere, so that Python's own flush at exit does not fail a second time."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return True


def _fail(message: str, code: int) -> None:
    from rich.console import Console
    from rich.markup import escape

    _stdout_broken()
    err = Console(stderr=True, highlight=False)
    world = os.environ.get("WORLD_SIZE", "1")
    torchrun = world not in ("", "1") and os.environ.get("MASTER_ADDR")
    where = f" (rank {os.environ.get('RANK', '?')} of {world})" if torchrun else ""
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error{where}:[/] {escape(line)}", soft_wrap=True)
    sys.exit(code)


app = typer.Typer(
    cls=LoraGroup,
    help="Reproduce, measure and extend the classic LoRA demonstrations.",
    epilog="Start with: lora run configs/posit.yaml (the blog pipeline) or lora run configs/smoke.yaml (seconds).",
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit.")] = None,
) -> None:
    """Show the help when no command is given."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


for name, command in {
    "run": pipeline.run,
    "pretrain": pipeline.pretrain,
    "finetune": pipeline.finetune,
    "merge": pipeline.merge,
    "sweep": sweep.sweep,
    "approx": approx.approx,
    "plot": plot.plot,
    "data": plot.data,
    "export": export.export,
    "report": report.report,
    "runs": inspect.runs,
    "compare": inspect.compare,
    "validate": inspect.validate,
    "schema": inspect.schema,
}.items():
    app.command(name, cls=LoraCommand)(command)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")  # stop like Ctrl-C: record the stage interrupted, keep its checkpoint


def main() -> None:
    from lora_cli.commands.output import plain_streams

    signal.signal(signal.SIGTERM, _terminate)
    plain_streams()
    app()
