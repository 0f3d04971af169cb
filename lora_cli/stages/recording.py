"""A stage's status in its run folder: running, then complete, failed or interrupted.

`recording` wraps a stage. A divergence or any other error marks the stage failed with
its reason. Ctrl-C or SIGTERM marks it interrupted, with the epoch it reached and the
checkpoint it can resume from, and raises `Interrupted` for the command to word.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lora_cli.errors import DivergenceError, Interrupted, signal_name
from lora_cli.store.files import utc_now
from lora_cli.store.run_folder import RunFolder
from lora_cli.train.loop import EpochCallback


class EpochTracker:
    """Passes progress on, remembering the last epoch reached (for the interrupted record)."""

    def __init__(self, on_epoch: EpochCallback | None):
        self.on_epoch, self.epoch = on_epoch, 0

    def __call__(self, epoch: int, loss: float | None) -> None:
        self.epoch = epoch
        if self.on_epoch:
            self.on_epoch(epoch, loss)


@contextmanager
def recording(run: RunFolder, name: str, resume: bool = False, tracker: EpochTracker | None = None) -> Iterator[None]:
    """Mark the stage running; on failure mark it failed with the reason, on Ctrl-C or SIGTERM
    interrupted (with the epoch reached and the checkpoint kept), then re-raise."""
    run.start_stage(name, resume)
    try:
        yield
    except DivergenceError as exc:
        message = f"{name}: {exc}"
        run.update_stage(name, status="failed", error=message, finished=utc_now())
        raise DivergenceError(message) from None
    except KeyboardInterrupt as exc:
        raise _interrupted(run, name, tracker, signal_name(exc)) from None
    except BaseException as exc:
        mark_failed(run, name, exc)
        raise


def mark_failed(run: RunFolder, name: str, exc: BaseException) -> None:
    """Record stage `name` failed, with the error's message (or its type when it has none)."""
    run.update_stage(name, status="failed", error=str(exc) or type(exc).__name__, finished=utc_now())


def _interrupted(run: RunFolder, name: str, tracker: EpochTracker | None, signal: str) -> Interrupted:
    epoch = tracker.epoch if tracker else None
    saved = run.interrupted(name)  # from the file: the signal may land before the manifest names it
    run.update_stage(name, status="interrupted", epoch=epoch, checkpoint_epoch=saved, signal=signal, finished=utc_now())
    where = f" at epoch {epoch}" if epoch else ""
    kept = f"its checkpoint at epoch {saved} is kept" if saved else "it had no checkpoint yet and will start over"
    return Interrupted(f"{name} interrupted{where} by {signal}; {kept}", signal)
