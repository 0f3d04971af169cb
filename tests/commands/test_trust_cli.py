"""Resume keeps only what it has checked (issue 22, classes 1-3): a damaged trial, a damaged
shared base and a damaged finished run are found, said in one line each, and trained again
from their intact inputs, ending byte-identical to the undamaged folders. Real processes."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.commands.procs import error_lines, lora_run
from tests.conftest import SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

SPEC = f"""name: tiny
base: {SMOKE}
config: {{pretrain: {{epochs: 5}}, finetune: {{epochs: 5}}}}
grid: {{adapter.rank: [1, 2, 3]}}
"""
TRIAL = "trials/001-rank-2"


def _digests(folder: Path) -> dict[str, str]:
    """Every file a run folder's manifest vouches for, hashed as it is on disk now."""
    files = json.loads((folder / "manifest.json").read_text())["files"]
    return {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in files}


def pd_rows(path: Path) -> dict[str, float | str]:
    """The one row of a trial's results.csv, numbers as floats."""
    import csv

    (row,) = csv.DictReader(path.read_text().splitlines())
    return {k: float(v) if k.endswith("_loss") and v else v for k, v in row.items()}


def _copy(folder: Path, to: Path) -> Path:
    """A copy that keeps hard links as links (a sweep's trials link its base), as cp -a does."""
    subprocess.run(["cp", "-a", str(folder), str(to)], check=True)
    return to


def _record_hash(folder: Path, rel: str) -> None:
    """Make the manifest vouch for the file as it is now (damage that only the content check sees)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][rel]["sha256"] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    (root / "spec.yaml").write_text(SPEC)
    done = lora_run("sweep", root / "spec.yaml", "--run-dir", root / "s", "--no-plot")
    assert done.returncode == 0, done.stderr
    return root / "s"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust-run") / "r"
    done = lora_run("run", SMOKE, "--epochs", "5", "--set", "pretrain.checkpoint_every=0", "--run-dir", folder)
    assert done.returncode == 0, done.stderr
    return folder


def _nan_adapter(folder: Path) -> None:
    path = folder / "adapter" / "adapter_model.safetensors"
    tensors = load_file(path)
    key = next(iter(tensors))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, path)
    _record_hash(folder, "adapter/adapter_model.safetensors")


TRIAL_DAMAGE = {
    "truncated adapter": lambda t: (t / "adapter" / "adapter_model.safetensors").write_bytes(b"x" * 50),
    "NaN adapter, hash updated": _nan_adapter,
    "garbage metrics": lambda t: (t / "metrics.jsonl").write_text("garbage\n"),
    "edited config": lambda t: (t / "config.yaml").write_text((t / "config.yaml").read_text().replace("rank: 2", "rank: 3")),
}


@pytest.mark.parametrize("damage", list(TRIAL_DAMAGE))
def test_sweep_resume_trains_a_damaged_trial_again(sweep, tmp_path, damage):
    copy = _copy(sweep, tmp_path / "s")
    before = _digests(copy / TRIAL)
    TRIAL_DAMAGE[damage](copy / TRIAL)
    resumed = lora_run("sweep", "--resume", copy, "--no-plot")
    assert resumed.returncode == 0, resumed.stderr
    said = [line for line in resumed.stderr.splitlines() if line.startswith("trial ")]
    assert len(said) == 1 and said[0].startswith("trial 001-rank-2: ") and said[0].endswith("training it again"), said
    assert "1 trial on the batched engine: 1 complete" in resumed.stderr
    # trained again from the same inputs, now alone on the batched engine: the same adapter up
    # to the rounding a lane's neighbours change (tests/test_batched.py), and so the losses in
    # the tables written from it; every other file the same bytes
    again, adapter = _digests(copy / TRIAL), "adapter/adapter_model.safetensors"
    rounded = {adapter, "results.csv", "results.jsonl", "curves.csv"}
    assert {k: v for k, v in again.items() if k not in rounded} == {k: v for k, v in before.items() if k not in rounded}
    tables = [pd_rows(copy / TRIAL / "results.csv"), pd_rows(sweep / TRIAL / "results.csv")]
    assert tables[0].keys() == tables[1].keys() and tables[0]["final_loss"] == pytest.approx(tables[1]["final_loss"], rel=1e-4)
    new, old = load_file(copy / TRIAL / adapter), load_file(sweep / TRIAL / adapter)
    for key in old:
        torch.testing.assert_close(new[key], old[key], rtol=1e-4, atol=1e-5)
    for other in ("trials/000-rank-1", "trials/002-rank-3"):
        assert _digests(copy / other) == _digests(sweep / other)


def test_a_damaged_shared_base_is_found_through_any_trial(sweep, tmp_path):
    copy = _copy(sweep, tmp_path / "s")
    (copy / "trials/000-rank-1/base.safetensors").write_bytes(b"x" * 50)  # in place: through the hard link
    merged = lora_run("merge", "-r", copy / TRIAL)
    assert merged.returncode == 1
    [line] = error_lines(merged.stderr)
    assert "hard-linked with 3 other files" in line and line.endswith(f"repair it with `lora sweep --resume {copy}`")
    resumed = lora_run("sweep", "--resume", copy, "--no-plot")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{copy}/bases/base-0/base.safetensors: does not match the SHA-256" in resumed.stderr
    assert "pretraining bases/base-0 again" in resumed.stderr
    assert sum(line.startswith("trial ") for line in resumed.stderr.splitlines()) == 3
    for trial in ("trials/000-rank-1", TRIAL, "trials/002-rank-3", "bases/base-0"):  # the same group again
        assert _digests(copy / trial) == _digests(sweep / trial), trial
    assert lora_run("merge", "-r", copy / TRIAL).returncode == 0


def _edit_hash(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["shift.safetensors"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))


RUN_DAMAGE = {  # what is damaged, and the first stage that must run again
    "base deleted": (lambda r: (r / "base.safetensors").unlink(), "pretrain"),
    "merged deleted": (lambda r: (r / "merged.safetensors").unlink(), "merge"),
    "metrics deleted": (lambda r: (r / "metrics.jsonl").unlink(), "pretrain"),
    "adapter truncated": (lambda r: (r / "adapter/adapter_model.safetensors").write_bytes(b"\0" * 20), "finetune"),
    "a hash edited": (_edit_hash, "finetune"),
}


@pytest.mark.parametrize("damage", list(RUN_DAMAGE))
def test_run_resume_checks_what_it_keeps(finished, tmp_path, damage):
    copy = _copy(finished, tmp_path / "r")
    harm, stage = RUN_DAMAGE[damage]
    harm(copy)
    resumed = lora_run("run", "--resume", "--run-dir", copy)
    assert resumed.returncode == 0, resumed.stderr
    assert f"; running {stage} again" in resumed.stderr
    assert _digests(copy) == _digests(finished)
    assert lora_run("run", "--resume", "--run-dir", copy).stderr.count("already complete, kept") == 3
