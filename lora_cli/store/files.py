"""Safe file primitives for run folders: whole-file writes, hashes, strict JSON reading."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_cli.errors import DamageError, RunError


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


# new files get 0666 less the umask, as `open` gives them (mkstemp alone would make them 0600)
FILE_MODE = 0o666 & ~_umask()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def guard_write(path: Path) -> Iterator[None]:
    """Turn any OSError inside the block (permissions, read-only or full disk, …) into one
    RunError line about `path`. Every write, rename and delete in a run folder goes through it."""
    try:
        yield
    except OSError as exc:
        raise RunError(f"{path}: cannot be written ({exc.strerror or exc}); check the folder is writable and has space") from None


NAME_MAX = 255  # bytes in one file or folder name on every common filesystem


def check_path(path: Path, what: str) -> None:
    """RunError when a name in `path` is longer than a filesystem takes (said before any
    folder is made, with the name cut short rather than echoed whole)."""
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise RunError(f"{what}: the name {part[:24]}… is {size} bytes, longer than the {NAME_MAX} a file or folder name may have; choose a shorter one")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part.

    Raises:
        RunError: the folder cannot be created or written (permissions, full disk, …).
    """
    tmp = None
    try:
        with guard_write(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def remove(path: Path) -> None:
    """Delete a file if it is there (RunError when the folder cannot be written)."""
    with guard_write(path):
        path.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """Delete a folder and everything in it, if it is there."""
    import shutil

    if path.is_dir():
        with guard_write(path):
            shutil.rmtree(path)


def remove_empty_folder(path: Path) -> None:
    """Delete `path` when it is an empty folder; leave it otherwise."""
    if path.is_dir() and not any(path.iterdir()):
        with guard_write(path):
            path.rmdir()


def finite_or_none(obj: Any) -> Any:
    """`obj` with every NaN or infinity replaced by None, so it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259): non-finite numbers become null, never NaN or Infinity."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False)


def json_shown(value: Any, limit: int = 40) -> str:
    """A JSON value as a file holds it (NaN, true, "text"), cut to `limit` characters for a message."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


DAMAGED_HINT = "delete the folder (rm -r {folder}) or choose another --run-dir"


def repair_clause(command: str | None, folder: Path) -> str:
    """What to do about damage in `folder`: run `command` (the one that repairs it), or, with
    none, delete the folder."""
    return f"repair it with `{command}`" if command else DAMAGED_HINT.format(folder=folder)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json_object(path: Path, fix: str | None = None) -> dict[str, Any]:
    """The JSON object in `path`; RunError ending in `fix` (default: a run folder's damage
    advice) when it is unreadable or not an object."""
    fix = fix or DAMAGED_HINT.format(folder=path.parent)
    try:
        obj = json.loads(read_small(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamageError(f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})", fix) from None
    if not isinstance(obj, dict):
        raise DamageError(f"{path}: not a JSON object", fix)
    return obj


MAX_READ = 64 * 2**20  # configs, manifests and adapter configs are kilobytes; this is far beyond any


def read_small(path: Path, limit: int = MAX_READ) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; OSError otherwise (a fifo or a
    device would block or never end, and a huge file is not what lora wrote)."""
    import errno
    import stat

    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit // 2**20} MiB")
        return f.read()
