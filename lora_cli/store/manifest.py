"""manifest.json read through one validated model: any shape lora did not write (a list where
an object belongs, a string for a loss, a path that leaves the folder) is "damaged", one line
with what to do, never a KeyError deep inside a command.

The model checks the structure the store and the commands rely on and the types of the
fields they read; a stage's own record fields beyond those are typed where the stages layer
rebuilds the record (stages/results.py). Readers get the JSON object as it was written, once
it has passed.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from lora_cli.errors import DamageError, RunError
from lora_cli.store.files import json_shown, read_json_object, repair_clause

FORMAT_VERSION = 1
STRICT = ConfigDict(strict=True, extra="allow")


def _inside(rel: str) -> str:
    """A path the manifest names must stay inside its folder: relative, no '..', no empty part."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{rel!r} is not a path inside the run folder")
    return rel


Inside = Annotated[str, AfterValidator(_inside)]


class FileEntry(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]


class StageEntry(TypedDict, total=False):
    """stages.<name>: what `lora runs`, resume and the stages read of every stage."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    status: Literal["running", "complete", "failed", "interrupted"]
    started: str
    finished: str
    seconds: float
    baseline_loss: float
    final_loss: float
    error: str
    signal: str
    epoch: int | None
    checkpoint_epoch: int | None
    trials: int
    complete: int
    failed: int
    processes: int
    metrics_sha256: str
    base_sha256: str
    shared_from: str


class TrialEntry(TypedDict, total=False):
    """trials.<id> in a sweep's manifest."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    status: Literal["pending", "running", "complete", "failed", "interrupted"]
    values: dict[str, Any]
    error: str | None
    engine: str
    started: str
    finished: str | None


class ChildEntry(TypedDict, total=False):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    kind: str | None
    name: str | None


class Manifest(TypedDict, total=False):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    format_version: Annotated[StrictInt, Field(ge=1)]
    kind: str
    name: str
    seed: int
    created: str
    versions: dict[str, str]
    stages: dict[str, StageEntry]
    files: dict[Inside, FileEntry]
    children: dict[Inside, ChildEntry]
    trials: dict[str, TrialEntry]
    figures: dict[Inside, list[str]]


_MANIFEST = TypeAdapter(Manifest)
REQUIRED = ("format_version", "stages", "files")


def read_manifest(path: Path, repair: str | None = None) -> dict[str, Any]:
    """The manifest at `path`, checked against the model; RunError (one line ending in the
    command that repairs the folder, `repair`, or else advice to delete it) when it cannot be
    read, is of another shape, or was written by a newer lora."""
    fix = repair_clause(repair, path.parent)
    manifest = read_json_object(path, fix)
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise RunError(
            f"{path.parent}: written by a newer lora (run format {version}, this lora reads ≤ {FORMAT_VERSION}); upgrade lora"
        )
    problem = shape_problem(manifest)
    if problem:
        raise DamageError(f"{path}: damaged ({problem})", fix)
    return manifest


def shape_problem(manifest: dict[str, Any]) -> str | None:
    """What in `manifest` is not the shape lora writes (the first problem), or None."""
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        return f"no {missing[0]!r}"
    try:
        _MANIFEST.validate_python(manifest)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg'].lower()}, found {json_shown(error.get('input'))}"
    return None
