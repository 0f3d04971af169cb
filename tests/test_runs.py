"""Run folders: atomic files, recorded hashes, refusals that protect finished work."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lora_cli.errors import RunError
from lora_cli.store.files import atomic_write, sha256_bytes
from lora_cli.store.run_index import list_runs, newest
from lora_cli.stages.kinds import create_run, open_run
from lora_cli.store.run_files import MANIFEST
from tests.conftest import tiny_config


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_tensors_round_trip_with_their_hash(tmp_path):
    run = create_run(tiny_config(), tmp_path / "r", tmp_path)
    w = torch.randn(3, 4)
    digest = run.save_tensors("base.safetensors", {"weight": w})
    assert digest == sha256_bytes((tmp_path / "r" / "base.safetensors").read_bytes())
    assert run.manifest()["files"]["base.safetensors"]["sha256"] == digest
    assert torch.equal(run.load_tensors("base.safetensors")["weight"], w)
    assert torch.equal(load_file(tmp_path / "r" / "base.safetensors")["weight"], w)


def test_altered_or_truncated_tensors_are_refused(tmp_path):
    run = create_run(tiny_config(), tmp_path / "r", tmp_path)
    run.save_tensors("base.safetensors", {"weight": torch.randn(3, 4)})
    path = tmp_path / "r" / "base.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(RunError, match="does not match the SHA-256"):
        run.load_tensors("base.safetensors")
    path.unlink()
    with pytest.raises(RunError, match="missing; repair it with `lora run --resume --run-dir "):
        run.load_tensors("base.safetensors")


def test_create_refuses_to_clobber(tmp_path):
    cfg = tiny_config()
    run = create_run(cfg, tmp_path / "r", tmp_path)
    run.update_stage("pretrain", status="complete")
    with pytest.raises(RunError, match="already holds a run .*--force"):
        create_run(cfg, tmp_path / "r", tmp_path)
    again = create_run(cfg, tmp_path / "r", tmp_path, force=True)
    assert again.manifest()["stages"] == {}
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty and not a lora run folder"):
        create_run(cfg, other, tmp_path, force=True)
    assert (other / "keep.txt").read_text() == "mine"
    # a create killed before its manifest was written leaves only config.yaml: not in the way
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text("seed: 0\n")
    (killed / ".manifest.json.abc.tmp").write_text("{")
    assert create_run(cfg, killed, tmp_path).manifest()["stages"] == {}


def test_default_folder_name_newest_and_listing(tmp_path):
    first = create_run(tiny_config(), None, tmp_path)
    second = create_run(tiny_config(), None, tmp_path)
    assert first.path.name.startswith("smoke-") and first.path != second.path
    assert [r.path for r in list_runs(tmp_path)] == [first.path, second.path]
    assert newest(tmp_path) == second.path
    with pytest.raises(RunError, match="no run folders"):
        newest(tmp_path / "empty")


def test_open_refuses_non_runs_and_newer_formats(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        open_run(tmp_path / "nope")
    with pytest.raises(RunError, match="not a lora run folder"):
        open_run(tmp_path)
    run = create_run(tiny_config(), tmp_path / "r", tmp_path)
    manifest = json.loads((run.path / MANIFEST).read_text())
    manifest["format_version"] = 99
    (run.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="newer lora"):
        open_run(run.path)


def test_a_checkpoint_is_read_back_only_as_the_stage_that_wrote_it(tmp_path):
    from lora_cli.train.checkpoint import decode, encode
    from lora_cli.train.loop import History, LogPoint, TrainState

    state = TrainState(4, "fast", {"weight": torch.ones(2, 2)}, torch.zeros(8, dtype=torch.uint8), History([LogPoint(0, 0, 1.5, {"test_loss": 2.5})]))
    path = tmp_path / "finetune.safetensors"
    path.write_bytes(encode("pretrain", state))
    back = decode(path, "pretrain")
    assert back.epoch == 4 and back.history.points == state.history.points and torch.equal(back.tensors["weight"], torch.ones(2, 2))
    with pytest.raises(RunError, match="holds a pretrain checkpoint, not finetune's"):
        decode(path, "finetune")


def test_the_store_knows_no_kind_but_the_layout_it_is_given(tmp_path):
    """A made-up kind with two stages: rerunning the first forgets the second and its files;
    --force over it forgets everything; nothing in the store names a pipeline stage."""
    from lora_cli.store.run_folder import Layout, RunFolder

    layout = Layout(("draw", "paint"), {"draw": ("sketch.safetensors",), "paint": ("canvas.safetensors",)})
    header = {"kind": "art", "name": "art", "seed": 1}
    run = RunFolder.create(layout, header, "seed: 1\n", tmp_path / "art", tmp_path)
    for stage, rel in (("draw", "sketch.safetensors"), ("paint", "canvas.safetensors")):
        run.start_stage(stage)
        run.save_tensors(rel, {"x": torch.ones(2)})
        run.update_stage(stage, status="complete")
    run.append_metrics([{"stage": s, "epoch": 1, "step": 1, "loss": 1.0} for s in ("draw", "paint")])
    run.start_stage("draw")
    assert set(run.manifest()["stages"]) == {"draw"} and run.manifest()["files"] == {}
    assert not (run.path / "canvas.safetensors").exists() and run.metrics() == []
    with pytest.raises(RunError, match="unknown run kind 'art'"):
        open_run(run.path)
    assert RunFolder.open(run.path, {"art": layout}).layout == layout


def test_child_folders_are_run_folders_of_their_own(tmp_path):
    """A sweep's trials: each child is complete on its own (opened, hashed, listed), and a
    --force over the parent removes them with it."""
    from lora_cli.stages.kinds import KINDS, LAYOUTS
    from lora_cli.store.run_folder import RunFolder

    parent = RunFolder.create(KINDS["approx"].layout, {"kind": "approx", "name": "p", "seed": 0}, "", tmp_path / "p", tmp_path)
    child = parent.create_child("trials/t1", LAYOUTS["pipeline"], {"kind": "pipeline", "name": "t1", "seed": 3}, "seed: 3\n")
    digest = child.save_tensors("base.safetensors", {"weight": torch.ones(2, 3)})
    alone = open_run(child.path, lock="shared")
    assert alone.kind == "pipeline" and alone.manifest()["files"]["base.safetensors"]["sha256"] == digest
    assert torch.equal(alone.load_tensors("base.safetensors")["weight"], torch.ones(2, 3))
    assert list(parent.children(LAYOUTS)) == ["trials/t1"] and parent.children(LAYOUTS)["trials/t1"].path == child.path
    parent.update_stage("approx", status="complete")
    again = RunFolder.create(KINDS["approx"].layout, {"kind": "approx", "name": "p", "seed": 0}, "", tmp_path / "p", tmp_path, force=True)
    assert not child.path.exists() and again.children(LAYOUTS) == {}
