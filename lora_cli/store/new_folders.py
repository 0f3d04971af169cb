"""Where a new run folder goes (a unique name under the runs root), and what a create stopped
before manifest.json existed leaves behind, so that the folder can be started again."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from lora_cli.errors import RunError
from lora_cli.store import locking
from lora_cli.store.files import guard_write
from lora_cli.store.run_files import MANIFEST

CONFIG = "config.yaml"


def new_folder(root: Path, name: str) -> Path:
    """root/<name>-<UTC time>, made here so two processes starting together never share one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if root.is_symlink() and not root.exists():
        raise RunError(f"{root}: is a link to {root.readlink()}, which does not exist; create that folder or choose another runs root")
    with guard_write(root):
        root.mkdir(parents=True, exist_ok=True)
        for suffix in range(1, 10_000):
            path = root / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    raise RunError(f"{root}: too many run folders named {name}-{stamp}; choose a --run-dir")


def creation_leftover(path: Path) -> bool:
    """What a create killed before manifest.json existed leaves: config.yaml, the lock or a temporary."""
    return path.name in (CONFIG, locking.LOCK) or (path.name.startswith(".") and path.name.endswith(".tmp"))


def not_a_run(folder: Path) -> str:
    """Why `folder` (a folder without manifest.json) cannot be opened as a run, and what works:
    for a run stopped as it started, the command that made it (from its lock file), again."""
    left = list(folder.iterdir())
    if not left or not all(creation_leftover(p) for p in left):
        return f"{folder}: not a lora run folder (no {MANIFEST}); start one with `lora run CONFIG`"
    command = locking.last_command(folder)
    if command and not {"--run-dir", "-r"} & set(command.split()):
        command += f" --run-dir {folder}"
    again = f"`{command}`" if command else f"the command that made it, with --run-dir {folder},"
    return f"{folder}: a run stopped as it started (no {MANIFEST} yet); run {again} again"
