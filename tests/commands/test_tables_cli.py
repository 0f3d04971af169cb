"""results.csv and curves.csv for notebooks: `pandas.read_csv` of each gives back the numbers
the terminal tables print (a run's one row, a sweep's rows, the seeds' means and stds, which
pandas recomputes on its own), every resolved config key, and every logged metric; the sweep
flags --zip, --seeds and --per-seed."""

import json

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.measure.trackers import flat_params
from lora_cli.show.tables import fmt_loss
from tests.conftest import SMOKE

pd = pytest.importorskip("pandas", reason="pandas is not installed: .venv/bin/pip install -e '.[test]'")
pytestmark = pytest.mark.slow
runner = CliRunner()
SMALL = ["--set", "pretrain.epochs=4", "--set", "finetune.epochs=4", "--set", "finetune.log_every=2"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _table_line(output, first_cell):
    """The line of a printed table whose first cell is `first_cell`."""
    return next(line for line in output.splitlines() if line.startswith("│") and line.strip("│ ").split(" ")[0] == first_cell)


def test_a_run_has_one_results_row_and_its_curves(tmp_path):
    run_dir = tmp_path / "r"
    done = runner.invoke(app, ["run", str(SMOKE), "--rank", "2", *SMALL, "--run-dir", str(run_dir), "--json"])
    assert done.exit_code == 0, done.output
    finetune = json.loads(done.stdout)["stages"]["finetune"]
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 1 and results.trial[0] == "smoke" and results.status[0] == "complete"
    for key in ("final_loss", "optimal_loss", "gap", "final_test_loss"):
        assert results[key][0] == pytest.approx(finetune[key], rel=1e-12)
    config = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))
    assert {c[len("config."):] for c in results.columns if c.startswith("config.")} == set(flat_params(config))
    assert results["config.adapter.rank"][0] == 2 and results["config.seed"][0] == config["seed"]
    curves = pd.read_csv(run_dir / "curves.csv")
    assert list(curves.columns) == ["trial", "stage", "epoch", "metric", "value"]
    logged = _rows(run_dir / "metrics.jsonl")
    for stage in ("pretrain", "finetune"):
        for metric in ("loss", "test_loss"):
            mine = curves[(curves.stage == stage) & (curves.metric == metric)]
            assert list(mine.epoch) == [r["epoch"] for r in logged if r["stage"] == stage]
            assert list(mine.value) == pytest.approx([r[metric] for r in logged if r["stage"] == stage], rel=1e-12)


def test_a_sweeps_tables_hold_what_its_terminal_table_prints(tmp_path):
    sweep = tmp_path / "s"
    args = ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", "--zip", "adapter.alpha=1,8", "--zip", "adapter.scaling=standard,rslora",
            "--seeds", "0,1", *SMALL, "--run-dir", str(sweep), "--no-plot"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 8 and set(results.seed) == {0, 1}
    assert list(zip(results["adapter.alpha"], results["adapter.scaling"]))[:4] == [(1, "standard")] * 2 + [(8, "rslora")] * 2
    grid = json.loads((sweep / "grid.json").read_text())
    for trial, row in zip(grid, results.itertuples()):
        assert {c[len("config."):] for c in results.columns if c.startswith("config.")} == set(flat_params(trial["config"]))
        assert getattr(row, "trial") == trial["id"]
    assert list(results["config.seed"]) == list(results.seed)
    # the seeds' aggregates, recomputed by pandas, are the numbers the table prints
    stats = results.groupby(["adapter.rank", "adapter.alpha", "adapter.scaling"], sort=False).agg(
        mean=("final_loss", "mean"), std=("final_loss", "std"), low=("final_loss", "min"), high=("final_loss", "max"),
        gap=("gap", "mean"), trials=("trial", lambda t: " ".join(x.split("-", 1)[0] for x in t)))
    assert len(stats) == 4
    for (rank, alpha, scaling), s in stats.iterrows():
        line = _table_line(done.stdout, s.trials.split()[0])
        assert s.trials in line and f"{fmt_loss(s['mean'])} ± {fmt_loss(s['std'])}" in line
        assert f"{fmt_loss(s.low)} – {fmt_loss(s.high)}" in line and fmt_loss(s.gap) in line
    assert pd.read_csv(sweep / "seeds.csv")["final_loss_mean"].tolist() == pytest.approx(stats["mean"].tolist(), rel=1e-12)
    # curves: each trial's finetune rows and the bases' pretrain rows
    curves = pd.read_csv(sweep / "curves.csv")
    for trial in results.trial:
        logged = [r for r in _rows(sweep / "trials" / trial / "metrics.jsonl") if r["stage"] == "finetune"]
        mine = curves[(curves.trial == trial) & (curves.metric == "loss")]
        assert list(mine.value) == pytest.approx([r["loss"] for r in logged], rel=1e-12) and set(mine.stage) == {"finetune"}
    assert set(curves[curves.stage == "pretrain"].trial) == {"base-0", "base-1"}  # a base per seed
    # --per-seed: every trial's own row, its numbers those of results.csv
    shown = runner.invoke(app, ["sweep", "--resume", str(sweep), "--per-seed", "--no-plot"])
    assert shown.exit_code == 0, shown.output
    for row in results.itertuples():
        assert fmt_loss(row.final_loss) in _table_line(shown.stdout, row.trial.split("-", 1)[0])


@pytest.mark.parametrize(("flags", "says"), [
    (["--zip", "adapter.alpha=1,8", "--zip", "adapter.scaling=standard"], "adapter.alpha has 2, adapter.scaling has 1 values"),
    (["--seeds", "0,x"], "--seeds '0,x': expected whole numbers"),
    (["--zip", "adapter.alpha"], "--zip 'adapter.alpha': expected KEY=V1,V2"),
])
def test_bad_zip_and_seeds_are_one_line_each(tmp_path, flags, says):
    done = runner.invoke(app, ["sweep", str(SMOKE), *flags, "--run-dir", str(tmp_path / "s")])
    assert done.exit_code == 2 and says in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert not (tmp_path / "s").exists()
