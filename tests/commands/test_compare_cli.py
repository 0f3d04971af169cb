"""`lora runs` columns, --filter and --sort, and `lora compare`: the numbers each shows are the
manifests' own, the order is the one asked for, and a bad filter or sort is one line."""

import json

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.show.tables import fmt_loss
from tests.conftest import SMOKE

pytestmark = pytest.mark.slow
runner = CliRunner()
SMALL = ["--set", "pretrain.epochs=4", "--set", "finetune.epochs=4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for rank, method in ((1, "lora"), (2, "lora"), (2, "dora")):
        done = runner.invoke(app, ["run", str(SMOKE), "--rank", str(rank), "--method", method, *SMALL, "--run-dir", str(root / f"{method}-{rank}")])
        assert done.exit_code == 0, done.output
    return root


def _finetune(root, name):
    return json.loads((root / name / "manifest.json").read_text())["stages"]["finetune"]


def _names(args):
    done = runner.invoke(app, ["runs", *args, "--json"])
    assert done.exit_code == 0, done.output
    return [r["name"] for r in json.loads(done.stdout)["runs"]]


def test_runs_shows_each_runs_method_rank_and_losses_beside_its_optimum(root):
    done = runner.invoke(app, ["runs", "--root", str(root), "--json"])
    rows = {r["name"]: r["columns"] for r in json.loads(done.stdout)["runs"]}
    for name in ("lora-1", "lora-2", "dora-2"):
        record = _finetune(root, name)
        assert {k: rows[name][k] for k in ("method", "rank", "final_loss", "final_test_loss", "optimal_loss", "gap")} == \
            {k: record[k] for k in ("method", "rank", "final_loss", "final_test_loss", "optimal_loss", "gap")}
        assert rows[name]["status"] == "complete" and rows[name]["kind"] == "pipeline"
    text = runner.invoke(app, ["runs", "--root", str(root)]).stdout
    line = next(line for line in text.splitlines() if "│ dora-2 " in line)
    record = _finetune(root, "dora-2")
    assert all(fmt_loss(record[k]) in line for k in ("final_loss", "final_test_loss", "optimal_loss", "gap")) and "dora" in line


def test_runs_filters_and_sorts(root):
    gaps = {name: _finetune(root, name)["gap"] for name in ("lora-1", "lora-2", "dora-2")}
    assert _names(["--root", str(root), "--sort", "gap"]) == sorted(gaps, key=gaps.get)
    assert _names(["--root", str(root), "--sort", "gap", "--reverse"]) == sorted(gaps, key=gaps.get, reverse=True)
    assert sorted(_names(["--root", str(root), "--filter", "method=lora"])) == ["lora-1", "lora-2"]
    assert _names(["--root", str(root), "--filter", "method=lora", "--filter", "adapter.rank=2"]) == ["lora-2"]
    assert _names(["--root", str(root), "--filter", "rank=3"]) == []
    for bad, says in ((["--filter", "colour=red"], "not a column"), (["--sort", "colour"], "not a column"), (["--filter", "rank"], "expected KEY=VALUE")):
        done = runner.invoke(app, ["runs", "--root", str(root), *bad])
        assert done.exit_code == 2 and says in done.output and len(done.output.strip().splitlines()) == 1, done.output


def test_compare_prints_the_keys_that_differ_and_the_results_side_by_side(root):
    a, b = root / "lora-2", root / "dora-2"
    done = runner.invoke(app, ["compare", str(a), str(b), "--json"])
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    assert found["differ"] == {"adapter.method": ["lora", "dora"]}
    for stage in ("pretrain", "finetune", "merge"):
        for i, folder in enumerate((a, b)):
            record = json.loads((folder / "manifest.json").read_text())["stages"][stage]
            assert found["stages"][stage]["final_loss"][i] == record["final_loss"]
    text = runner.invoke(app, ["compare", str(a), str(b)]).stdout
    assert "adapter.method" in text and fmt_loss(_finetune(root, "dora-2")["gap"]) in text
    one = runner.invoke(app, ["compare", str(a)])
    assert one.exit_code == 2 and "two or more run folders" in one.output


def test_a_folder_written_before_a_key_was_renamed_is_filtered_by_its_current_name(tmp_path):
    """config.yaml with finetune.rank and adapter.dora (as folders before the adapter section wrote
    it) answers --filter adapter.rank and adapter.method, as loading it would read them."""
    import yaml

    from lora_cli.stages.listing import flat_config

    old = tmp_path / "old"
    done = runner.invoke(app, ["run", str(SMOKE), "--rank", "2", *SMALL, "--run-dir", str(old)])
    assert done.exit_code == 0, done.output
    doc = yaml.safe_load((old / "config.yaml").read_text())
    doc["finetune"]["rank"] = doc["adapter"].pop("rank")
    doc["adapter"]["dora"] = False
    doc["adapter"].pop("method")
    (old / "config.yaml").write_text(yaml.safe_dump(doc))
    flat = flat_config(old)
    assert flat["adapter.rank"] == 2 and flat["adapter.method"] == "lora" and "finetune.rank" not in flat
    assert _names(["--root", str(tmp_path), "--filter", "adapter.rank=2", "--filter", "adapter.method=lora"]) == ["old"]
