"""Damaged folders, fuzzed (issue 22): seeded damage to a finished run and a finished sweep
(truncate, flip a byte, delete, edit a JSON value or its type, drop a key, append a garbage
line, write NaN under an updated hash), then runs, plot, data, merge and resume on each. After
every command: no internal error and no traceback; a resume that exits 0 leaves a folder an
independent check (hashlib, safetensors, json) finds whole; and no file lora wrote is ever
replaced by bytes its manifest does not vouch for."""

import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

runner = CliRunner()
CASES = 30  # per folder kind; seeds 0..CASES-1, the same every run
VALUES = [None, "x", "", [], {}, 0, -1, 1.5, 1e308, True, "1", [1, 2], {"a": 1}]


def _copy(folder: Path, to: Path) -> Path:
    subprocess.run(["cp", "-a", str(folder), str(to)], check=True)  # keeps a sweep's hard links
    return to


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-originals")
    run = runner.invoke(app, ["run", str(SMOKE), "--epochs", "4", "--run-dir", str(root / "run")])
    assert run.exit_code == 0, run.output
    sweep = runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", "--set", "pretrain.epochs=4",
                                "--set", "finetune.epochs=4", "--run-dir", str(root / "sweep"), "--no-plot"])
    assert sweep.exit_code == 0, sweep.output
    return root


# ---- damage ---------------------------------------------------------------------------

def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def _truncate(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: rng.randrange(size)] if size else b"")
    return "truncated"


def _flip(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "empty, left"
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"bit flipped at byte {at}"


def _delete(path: Path, rng: random.Random) -> str:
    path.unlink()
    return "deleted"


def _garbage_line(path: Path, rng: random.Random) -> str:
    with open(path, "a") as f:
        f.write(rng.choice(["garbage\n", "[1]\n", '{"stage": 3}\n', '{"stage": "pretrain", "ep']))
    return "a garbage line appended"


def _json_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _json_paths(value, (*prefix, i))


def _edit_json(path: Path, rng: random.Random) -> str:
    doc = json.loads(path.read_text())
    where = rng.choice([p for p in _json_paths(doc) if p])
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[where[-1]]
        path.write_text(json.dumps(doc))
        return f"key {'.'.join(map(str, where))} dropped"
    value = rng.choice(VALUES)
    parent[where[-1]] = value
    path.write_text(json.dumps(doc))
    return f"{'.'.join(map(str, where))} set to {value!r}"


def _nan_under_its_hash(path: Path, rng: random.Random) -> str:
    tensors = load_file(path)
    key = rng.choice(sorted(tensors))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[rng.randrange(tensors[key].numel())] = rng.choice([float("nan"), float("inf")])
    save_file(tensors, path)
    manifest_path = next(p / "manifest.json" for p in path.parents if (p / "manifest.json").is_file())
    manifest = json.loads(manifest_path.read_text())
    rel = str(path.relative_to(manifest_path.parent))
    if rel in manifest["files"]:
        data = path.read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest_path.write_text(json.dumps(manifest))
    return f"{key} non-finite, hash updated"


def damage(folder: Path, rng: random.Random) -> str:
    """One seeded piece of damage somewhere in `folder`; what was done, for the failure message."""
    path = rng.choice(_files(folder))
    ways = [_truncate, _flip, _delete]
    if path.suffix == ".json":
        ways += [_edit_json] * 4
    if path.suffix == ".jsonl":
        ways += [_garbage_line] * 2
    if path.suffix == ".safetensors" and "checkpoints" not in path.parts:
        ways += [_nan_under_its_hash] * 2
    how = rng.choice(ways)(path, rng)
    return f"{path.relative_to(folder)}: {how}"


# ---- independent checks -------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def whole(folder: Path) -> list[str]:
    """What is not as the folder's manifests say (empty: whole), checked without lora's code."""
    manifest = json.loads((folder / "manifest.json").read_text())
    problems = []
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or _sha(path.read_bytes()) != entry["sha256"]:
            problems.append(f"{rel}: not as recorded")
        elif rel.endswith(".safetensors") and not all(bool(torch.isfinite(t).all()) for t in load_file(path).values()):
            problems.append(f"{rel}: not finite")
    lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").exists() else []
    rows = [(line, json.loads(line)) for line in lines if line.strip()]  # raises on a line that is not JSON
    for stage, entry in manifest["stages"].items():
        if entry.get("status") != "complete":
            problems.append(f"{stage}: {entry.get('status')}")
        if "metrics_sha256" in entry:
            own = "".join(line + "\n" for line, row in rows if row["stage"] == stage)
            if _sha(own.encode()) != entry["metrics_sha256"]:
                problems.append(f"{stage}: metrics rows not as recorded")
    for rel in manifest.get("children", {}):
        problems += [f"{rel}/{p}" for p in whole(folder / rel)]
    return problems


def _vouched(folder: Path) -> dict[Path, str]:
    """Every file some manifest in `folder` vouches for, with the hash it vouches."""
    vouched = {}
    for manifest_path in folder.rglob("manifest.json"):
        try:
            files = json.loads(manifest_path.read_text())["files"]
            vouched.update({manifest_path.parent / rel: entry["sha256"] for rel, entry in files.items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return vouched


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in _files(folder)}


def check(result, folder: Path, before: dict[Path, bytes], what: str) -> None:
    """No internal error, one line per failure; any file rewritten is one a manifest vouches for."""
    output = result.output
    assert result.exit_code in (0, 1, 2), (what, result.exit_code, output)
    assert "internal error" not in output and "Traceback" not in output, (what, output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.exit_code == 0 or len(errors) == 1, (what, output)
    vouched = _vouched(folder)
    for path, data in before.items():
        if not path.is_file() or path.read_bytes() == data:
            continue
        now = path.read_bytes()
        if path.name == "manifest.json":  # lora's own records: rewritten whole, always readable
            assert isinstance(json.loads(now), dict), (what, path)
        elif path.name == "metrics.jsonl":
            assert all(isinstance(json.loads(line), dict) for line in now.decode().splitlines()), (what, path)
        elif path.name == "config.yaml":
            assert isinstance(yaml.safe_load(now), dict), (what, path)
        elif path.suffix != ".png":  # figures are redrawn from what is vouched for
            assert path in vouched and _sha(now) == vouched[path], (what, f"{path} rewritten with bytes no manifest vouches for")


def _run(args: list, folder: Path, what: str):
    before = _snapshot(folder)
    result = runner.invoke(app, [str(a) for a in args])
    check(result, folder, before, f"{what}; lora {' '.join(map(str, args))}")
    return result


@pytest.mark.parametrize("seed", range(CASES))
def test_a_damaged_run_folder(originals, tmp_path, seed):
    runs = tmp_path / "runs"
    runs.mkdir()
    folder = _copy(originals / "run", runs / "run")
    what = damage(folder, random.Random(seed))
    _run(["runs", "--root", runs, "--json"], folder, what)
    _run(["plot", folder], folder, what)
    _run(["data", folder, "--out", tmp_path / "data.safetensors"], folder, what)
    _run(["merge", "-r", folder, "--force"], folder, what)
    resumed = _run(["run", "--resume", "--run-dir", folder], folder, what)
    if resumed.exit_code == 0:
        assert whole(folder) == [], (what, resumed.output)
        assert _run(["plot", folder], folder, what).exit_code == 0


@pytest.mark.parametrize("seed", range(CASES))
def test_a_damaged_sweep_folder(originals, tmp_path, seed):
    runs = tmp_path / "runs"
    runs.mkdir()
    folder = _copy(originals / "sweep", runs / "sweep")
    what = damage(folder, random.Random(1000 + seed))
    _run(["runs", "--root", runs, "--json"], folder, what)
    _run(["plot", folder], folder, what)
    _run(["merge", "-r", folder / "trials/000-rank-1", "--force"], folder, what)
    _run(["data", folder / "trials/001-rank-2", "--out", tmp_path / "data.safetensors"], folder, what)
    resumed = _run(["sweep", "--resume", folder, "--no-plot"], folder, what)
    if resumed.exit_code == 0:
        assert whole(folder) == [], (what, resumed.output)
        assert "2 of 2 trials complete" in resumed.stderr
