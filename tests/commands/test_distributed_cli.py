"""Two CPU processes under torchrun (gloo): data-parallel training equals one process, only
rank 0 writes and prints, and a failing rank ends the job in seconds with its error."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lora_cli.runtime import distributed
from tests.commands.procs import stage, wait_for
from tests.conftest import ROOT, SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

# noise keeps every loss well above float32 rounding; 33-row batches split 17 + 16 over two ranks
UNEQUAL = ["--set", "data.noise_std=0.1", "--set", "pretrain.batch_size=33", "--set", "finetune.batch_size=33"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_DIST_TIMEOUT": "60"}


def torchrun(*args, launch=("--standalone", "--nproc-per-node=2"), env=ENV, **popen):
    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "lora_cli", *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def alone(*args):
    done = subprocess.run([sys.executable, "-m", "lora_cli", *map(str, args)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _losses(report, name):
    return [row["loss"] for row in report["stages"][name]["history"]]


def test_data_parallel_run_equals_one_process_with_unequal_shards(tmp_path):
    one = alone("run", SMOKE, *UNEQUAL, "--run-dir", tmp_path / "one", "--json")
    proc = torchrun("run", SMOKE, *UNEQUAL, "--run-dir", tmp_path / "two", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    two = json.loads(out)  # one JSON object: rank 1 printed nothing
    assert err.count("Run folder:") == 1 and err.count("All stages complete") == 1
    for name in ("pretrain", "finetune"):
        assert _losses(two, name) == pytest.approx(_losses(one, name), rel=1e-5), name
    assert two["stages"]["finetune"]["threads"] == 1  # torchrun's OMP_NUM_THREADS=1 per rank
    from safetensors.torch import load_file

    for path in ("base.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(tmp_path / "one" / path), load_file(tmp_path / "two" / path)
        assert all((a[k] - b[k]).abs().max() <= 1e-5 for k in a), path


def test_a_command_that_cannot_share_work_fails_on_every_rank_in_one_line(tmp_path):
    start = time.monotonic()
    proc = torchrun("merge", "--run-dir", tmp_path / "none")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert sorted(line.split(":")[0] for line in lines) == ["error (rank 0 of 2)", "error (rank 1 of 2)"]
    assert all("runs in one process; start it without torchrun" in line for line in lines)


def test_a_refusal_on_rank_0_before_any_work_ends_every_rank_in_one_line_each(tmp_path):
    start = time.monotonic()
    proc = torchrun("run", SMOKE, "--set", "adapter.dora=true", "--run-dir", tmp_path / "dora")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    said = {line.split(":")[0]: line for line in err.splitlines() if line.startswith("error")}
    assert "DoRA" in said["error (rank 0 of 2)"] and "start this without torchrun" in said["error (rank 0 of 2)"]
    assert "lost touch with the other processes" in said["error (rank 1 of 2)"]  # not "a bug in lora"
    assert not (tmp_path / "dora").exists()  # refused before any folder was made


def test_killing_one_rank_ends_the_job_and_resume_completes_it(tmp_path):
    run_dir = tmp_path / "run"
    long = ["--set", "pretrain.epochs=400", "--set", "pretrain.checkpoint_every=5", *UNEQUAL]
    proc = torchrun("pretrain", "-c", SMOKE, *long, "--run-dir", run_dir, start_new_session=True)
    wait_for(lambda: (run_dir / "checkpoints" / "pretrain.safetensors").is_file(), proc, "a checkpoint")
    follower = _follower_pid(proc.pid)
    killed = time.monotonic()
    os.kill(follower, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - killed < 60, err
    resumed = torchrun("pretrain", "--resume", "--run-dir", run_dir, "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    record = json.loads(out)
    assert record["resumed_from_epoch"] >= 5 and record["history"][-1]["epoch"] == 400
    assert stage(run_dir, "pretrain")["status"] == "complete"


def _follower_pid(launcher: int) -> int:
    """The worker torchrun started with RANK=1."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        for pid in _descendants(launcher):
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"RANK=1" in environ:
                return pid
        time.sleep(0.05)
    pytest.fail("no worker with RANK=1 appeared")


def _descendants(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            children += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
    except OSError:
        return []
    return children + [d for c in children for d in _descendants(c)]


SWEEP = ["--grid", "adapter.rank=1,2", "--grid", "adapter.init=normal,pissa", "--set", "data.noise_std=0.1", "--no-plot", "--json"]
# long enough to kill one rank mid-sweep: five groups (PiSSA and OLoRA trials train alone)
LONG = f"""# Used by: tests (a sweep long enough to kill one rank of two before it ends)
base: {SMOKE}
config: {{data: {{n: 4096, d_in: 96, d_out: 96}}, pretrain: {{epochs: 5}}, finetune: {{epochs: 600, batch_size: 32, lr: 0.005}}}}
grid: {{adapter.init: [normal, pissa, olora], adapter.rank: [2, 4]}}
"""


@pytest.fixture(scope="module")
def one_sweep(tmp_path_factory):
    """The reference: SWEEP in one plain process."""
    report = alone("sweep", SMOKE, *SWEEP, "--run-dir", tmp_path_factory.mktemp("one") / "s")
    return {row["trial"]: row for row in report["trials"]}


def _same_trials(got, expected):
    assert [row["trial"] for row in got] == list(expected)
    for row in got:
        assert row["status"] == "complete", row
        assert row["final_loss"] == pytest.approx(expected[row["trial"]]["final_loss"], rel=1e-5), row["trial"]


def test_a_sharded_sweep_equals_one_process_and_resumes_at_another_world_size(tmp_path, one_sweep):
    proc = torchrun("sweep", SMOKE, *SWEEP, "--run-dir", tmp_path / "two")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    two = json.loads(out)
    _same_trials(two["trials"], one_sweep)  # three groups (one batched, two alone) over two ranks
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert {f"trials/{t}" for t in one_sweep} <= set(manifest["children"])
    assert manifest["stages"]["sweep"]["processes"] == 2
    # a trial left running under two processes, finished by one
    redo = two["trials"][-1]["trial"]
    child = tmp_path / "two" / "trials" / redo / "manifest.json"
    data = json.loads(child.read_text())
    data["stages"]["finetune"]["status"] = "running"
    child.write_text(json.dumps(data))
    resumed = alone("sweep", "--resume", tmp_path / "two", "--no-plot", "--json")
    _same_trials(resumed["trials"], one_sweep)


def test_a_dry_run_under_torchrun_shows_the_rank_each_group_goes_to(tmp_path):
    proc = torchrun("sweep", SMOKE, *SWEEP, "--dry-run", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    groups = json.loads(out)["groups"]
    assert [g["rank"] for g in groups] == distributed.shard([g["seconds"] for g in groups], 2)
    assert {g["rank"] for g in groups} == {0, 1} and not (tmp_path / "runs").exists()


def test_two_launchers_meet_at_a_rendezvous_as_two_machines_would(tmp_path, one_sweep):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=t"]
    # one core each, as on two machines (torchrun sets OMP_NUM_THREADS only for several processes a node)
    launchers = [torchrun("sweep", SMOKE, *SWEEP, "--run-dir", tmp_path / "s", launch=node, env={**ENV, "OMP_NUM_THREADS": "1"})
                 for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in launchers]
    assert [proc.returncode for proc in launchers] == [0, 0], [err for _, err in outs]
    printed = [json.loads(out) for out, _ in outs if out]
    assert len(printed) == 1  # rank 0's launcher alone printed
    _same_trials(printed[0]["trials"], one_sweep)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["stages"]["sweep"]["processes"] == 2


def test_killing_one_rank_mid_sweep_then_resume_completes_it(tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(LONG)
    whole = torchrun("sweep", spec, "--run-dir", tmp_path / "whole", "--no-plot", "--json")
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    expected = {row["trial"]: row for row in json.loads(out)["trials"]}
    run_dir = tmp_path / "two"
    proc = torchrun("sweep", spec, "--run-dir", run_dir, "--no-plot", start_new_session=True)
    done = lambda: sum(stage(folder, "finetune").get("status") == "complete" for folder in run_dir.glob("trials/*"))  # noqa: E731
    wait_for(lambda: done() >= 1, proc, "a trial completed")
    killed = time.monotonic()
    os.kill(_follower_pid(proc.pid), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - killed < 60, err
    assert done() < len(expected), "the kill came after the sweep ended; make LONG longer"
    said = [line for line in err.splitlines() if line.startswith("error (rank 0 of 2): sweep interrupted by SIGTERM")]
    assert len(said) == 1 and f"{done()} of {len(expected)} trials complete" in said[0], err  # rank 1's trials counted too
    resumed = torchrun("sweep", "--resume", run_dir, "--no-plot", "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _same_trials(json.loads(out)["trials"], expected)
    assert not list(run_dir.rglob(".*.tmp"))
    for path in sorted((tmp_path / "whole").glob("trials/*/adapter/adapter_model.safetensors")):
        assert path.read_bytes() == (run_dir / path.relative_to(tmp_path / "whole")).read_bytes(), path


def test_on_a_given_base_a_sharded_sweep_writes_the_same_bytes(tmp_path):
    alone("pretrain", "-c", SMOKE, "--run-dir", tmp_path / "base", "--json")
    grid = ["--grid", "adapter.rank=1,2", "--grid", "adapter.init=normal,pissa", "--base", tmp_path / "base", "--no-plot", "--json"]
    alone("sweep", SMOKE, *grid, "--run-dir", tmp_path / "one")
    proc = torchrun("sweep", SMOKE, *grid, "--run-dir", tmp_path / "two")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    adapters = sorted((tmp_path / "one" / "trials").glob("*/adapter/adapter_model.safetensors"))
    assert len(adapters) == 4  # same groups, one thread a process on both sides: bit for bit
    for path in adapters:
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes(), path
