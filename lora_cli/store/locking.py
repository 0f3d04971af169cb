"""One writer per run folder: an OS file lock that dies with its process.

A command that writes a run folder holds an exclusive `flock` on `<folder>/.lock` until it
exits; commands that only read a folder they then write beside (plot --out) hold a shared
one. The kernel drops the lock when the process ends, however it ends (kill -9 included),
so a stale lock cannot exist. The holder writes its pid and command line into the file,
for the refusal message and for `lora runs`. The file itself stays: deleting a lock file
while another process waits on it would let two writers in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lora_cli.errors import RunError
from lora_cli.store.files import guard_write

LOCK = ".lock"
_held: dict[Path, int] = {}  # folder -> fd of the lock this process holds (kept open: closing releases)

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected against a second writer there
    fcntl = None


def acquire(folder: Path, shared: bool = False) -> None:
    """Lock `folder` for this process until `release_all` or exit; re-entrant per folder.

    Raises:
        RunError: another process holds the lock (names its pid and command), or the
            folder cannot be written.
    """
    key = folder.resolve()
    if key in _held or fcntl is None:
        return
    path = folder / LOCK
    if path.is_dir():
        raise RunError(f"{path}: is a folder where lora keeps its lock file; remove it (rmdir {path}) and run the command again")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if shared:  # a folder nobody can write cannot change under a reader
            return
        with guard_write(path):
            raise
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunError(f"{folder}: {_busy(folder)}; wait for it to finish, or choose another --run-dir") from None
    try:
        with guard_write(path):  # a full disk, say
            os.ftruncate(fd, 0)  # a reader clears what a killed writer left; a writer names itself
            if not shared:
                os.write(fd, f"{os.getpid()}\n{_command_line()}\n".encode())
    except RunError:
        os.close(fd)
        raise
    _held[key] = fd


def release_all() -> None:
    """Drop every lock this process holds (the CLI calls it as each command ends)."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()


def holder(folder: Path) -> str | None:
    """'pid N (command)' when another process holds `folder`'s lock, else None."""
    path = folder / LOCK
    if fcntl is None or folder.resolve() in _held or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _who(folder)
    finally:
        os.close(fd)  # closing drops the probe's own shared lock
    return None


def last_command(folder: Path) -> str | None:
    """The command line of the last writer (the lock file keeps it after the writer ends)."""
    try:
        return (folder / LOCK).read_text().partition("\n")[2].strip() or None
    except OSError:
        return None


def _busy(folder: Path) -> str:
    who = _who(folder)
    return f"another lora process ({who}) is using this run folder" if who else "another lora process is using this run folder"


def _who(folder: Path) -> str:
    try:
        pid, _, command = (folder / LOCK).read_text().partition("\n")
    except OSError:
        return ""
    pid, command = pid.strip(), command.strip()
    return f"pid {pid}: {command}" if pid and command else (f"pid {pid}" if pid else "")


def _command_line() -> str:
    return " ".join(["lora", *sys.argv[1:]])
