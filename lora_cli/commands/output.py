"""Where command output goes: tables or JSON on stdout, notes and progress on stderr."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape


class Output:
    """One per command invocation. With --json, stdout holds exactly one JSON object.
    `quiet` (ranks other than 0 under torchrun): nothing at all; errors still reach stderr."""

    def __init__(self, as_json: bool, quiet: bool = False):
        self.as_json, self.quiet = as_json, quiet
        self.out = Console(highlight=False)
        if not self.out.is_terminal:  # a pipe or a log: tables at their own width, never squeezed to 80 columns
            self.out = Console(highlight=False, width=LOG_WIDTH)
        self.err = Console(stderr=True, highlight=False)
        self._bar: Any = None  # the Rich Progress on screen, shared by nested bars

    def note(self, message: str) -> None:
        """A line for the person (which folder, what next); never part of the JSON."""
        if not self.quiet:
            self.err.print(escape(message), soft_wrap=True, style="cyan")

    def status(self, message: str) -> None:
        """What slow work is under way, on a terminal only (logs get the result, not the waiting)."""
        if self.err.is_terminal:
            self.note(message)

    def show(self, *items: RenderableType) -> None:
        """Tables and lines on stdout. A narrow terminal wraps a table's cells rather than cut
        a number to "…"; a line of prose is left for the terminal to wrap."""
        if self.as_json or self.quiet:
            return
        from rich.table import Table

        with _stdout_writes():
            for item in items:
                if isinstance(item, Table):
                    for column in item.columns:
                        column.overflow = "fold"
                self.out.print(item, soft_wrap=isinstance(item, str))

    def emit(self, result: dict[str, Any]) -> None:
        if self.as_json and not self.quiet:
            from lora_cli.store.files import dumps

            with _stdout_writes():  # plain write: Rich would wrap a long line; strict JSON (no NaN)
                sys.stdout.write(dumps(result) + "\n")
                sys.stdout.flush()

    @contextmanager
    def progress(self, label: str, epochs: int) -> Iterator[Callable[[int, float | None], None]]:
        """A transient bar on a terminal (under the `overall` bar when one is up); a silent
        callback in logs and CI."""
        if self.quiet or not self.err.is_terminal:
            yield lambda epoch, loss: None
            return
        with self._bars() as bar:
            task = bar.add_task(label, total=epochs, loss="")

            def on_epoch(epoch: int, loss: float | None) -> None:
                bar.update(task, completed=epoch, **({"loss": f"loss {loss:.4g}"} if loss is not None else {}))

            try:
                yield on_epoch
            finally:
                bar.remove_task(task)

    @contextmanager
    def overall(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """A transient bar over many pieces of work (a sweep's trials) that the `progress` bars
        of each piece show under; the callback takes how many are done. Silent off a terminal."""
        if self.quiet or not self.err.is_terminal:
            yield lambda done: None
            return
        with self._bars() as bar:
            task = bar.add_task(label, total=total, loss="")
            yield lambda done: bar.update(task, completed=done)

    @contextmanager
    def _bars(self) -> Iterator[Any]:
        if self._bar is not None:
            yield self._bar
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as bar:
            self._bar = bar
            try:
                yield bar
            finally:
                self._bar = None


LOG_WIDTH = 400  # columns when stdout is not a terminal: wide enough for any table lora draws


@contextmanager
def _stdout_writes() -> Iterator[None]:
    """A write to stdout that fails (a full disk, a closed pipe) is one clear line, not a bug."""
    from lora_cli.errors import LoraError

    try:
        yield
        sys.stdout.flush()
    except OSError as exc:
        raise LoraError(f"standard output cannot be written ({exc.strerror or exc}); the run folder holds every result") from None


# what lora prints beyond ASCII, for a stream that cannot encode it (PYTHONIOENCODING=ascii, an
# old terminal); anything else becomes "?"
ASCII = {"θ": "theta", "Δ": "Delta", "α": "alpha", "σ": "sigma", "…": "...", "≈": "~", "≤": "<=", "≥": ">=",
         "×": "x", "−": "-", "–": "-", "—": "-", "‖": "||", "°": " deg", "ᵀ": "^T", "√": "sqrt", "²": "^2",
         "★": "*", "→": "->", "·": "*", "₀": "0", "₂": "2", "’": "'", "“": '"', "”": '"', "✓": "ok"}


def _to_ascii(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "".join(ASCII.get(ch, "?") for ch in error.object[error.start : error.end]), error.end


def plain_streams() -> None:
    """Let stdout and stderr fall back to ASCII where their encoding cannot write what lora
    prints, instead of failing after the work is done."""
    codecs.register_error("lora-ascii", _to_ascii)
    for stream in (sys.stdout, sys.stderr):
        try:
            "θ…─".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="lora-ascii")
        except AttributeError:
            pass
