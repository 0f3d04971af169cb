"""`lora approx` and `lora plot` through the CLI."""

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE
from tests.test_approx import BLOG

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def test_approx_with_no_arguments_prints_the_blog_table(runs_dir):
    result = runner.invoke(app, ["approx"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for iteration, loss in BLOG.items():
        row = [line for line in lines if line.startswith("│") and line.split("│")[1].strip() == str(iteration)]
        assert len(row) == 1, iteration
        cells = [c.strip() for c in row[0].split("│")[1:-1]]
        assert cells[1] == loss
    for text in ("baseline", "52.22%", "65.02%", "Full (8 x 8)", "64", "32", "50.00%", "2.00x",
                 "Optimal rank-2 loss", "The plateau is the optimum", "5.377034"):
        assert text in result.stdout, text


def test_approx_run_folder(runs_dir):
    result = runner.invoke(app, ["approx", "--json", "--run-dir", "ap"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    manifest = json.loads((runs_dir.parent / "ap" / "manifest.json").read_text())
    rec = manifest["stages"]["approx"]
    assert manifest["kind"] == "approx" and rec["status"] == "complete"
    assert rec["final_loss"] == report["final_loss"] and rec["optimal_loss"] == report["optimal_loss"]
    assert f"{rec['baseline_loss']:.6f}" == "1.101851"
    assert abs(rec["final_loss"] - rec["optimal_loss"]) < 1e-6
    tensors = load_file(runs_dir.parent / "ap" / "approx.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"target": (8, 8), "A": (8, 2), "B": (2, 8)}
    lines = (runs_dir.parent / "ap" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == list(BLOG)


def test_approx_options_change_the_problem(runs_dir):
    result = runner.invoke(app, ["approx", "--d-in", "16", "--d-out", "12", "--rank", "3", "--iterations", "50", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["parameters"] == {"full": 192, "lora": 84, "rank": 3, "reduction": 1 - 84 / 192, "compression": 192 / 84, "method": "lora"}
    assert len(report["singular_values"]) == 12
    assert report["final_loss"] > report["optimal_loss"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--rank", "9"], "rank = 9 is out of range: must be 1 ≤ rank ≤ min(d_in, d_out) = 8"),
        (["--rank", "0"], "rank = 0 is out of range"),
        (["--d-in", "0"], "d_in = 0 is out of range: must be ≥ 1"),
        (["--d-out", "-4"], "d_out = -4 is out of range: must be ≥ 1"),
        (["--lr", "0"], "lr = 0 is out of range: must be > 0.0"),
        (["--iterations", "0"], "iterations = 0 is out of range"),
    ],
)
def test_invalid_sizes_are_one_line_exit_2(runs_dir, args, fragment):
    result = runner.invoke(app, ["approx", *args])
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0]
    assert not runs_dir.exists(), "nothing is written for a rejected config"


def _pngs(paths):
    """Each path a real picture: a PNG of the figure's size (inches x 110 dpi) with many colours."""
    from matplotlib.image import imread

    for path in paths:
        assert open(path, "rb").read(8) == PNG, path
        pixels = imread(path)  # (height, width, RGBA) in [0, 1]
        height, width = pixels.shape[:2]
        assert 400 <= height <= 500 and 550 <= width <= 1600, (path, pixels.shape)  # 4-7 in tall, up to 3 panels
        colours = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).round().reshape(-1, 3).tolist()}
        assert len(colours) > 20, (path, len(colours))  # axes, text and data, not one flat colour
        background = (pixels[..., :3] > 0.98).all(axis=-1).mean()
        assert background < 0.97, (path, background)  # something is drawn on the white
    return {p.rsplit("/", 1)[-1] for p in paths}


def test_plot_an_approx_run(runs_dir):
    result = runner.invoke(app, ["approx", "--plot", "--json", "--iterations", "200"])
    assert result.exit_code == 0, result.output
    names = _pngs(json.loads(result.stdout)["figures"])
    assert names == {"approx_loss.png", "approx_matrices.png", "approx_singular_values.png", "approx_parameters.png"}


def test_plot_a_pipeline_run_into_another_folder(runs_dir):
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "3"]).exit_code == 0
    result = runner.invoke(app, ["plot", "--out", "figs", "--json"])
    assert result.exit_code == 0, result.output
    names = _pngs(json.loads(result.stdout)["figures"])
    assert names == {"pipeline_loss.png", "delta_heatmap.png", "delta_singular_values.png"}
    assert all(p.startswith("figs/") for p in json.loads(result.stdout)["figures"])


def test_plot_needs_a_completed_stage(runs_dir):
    result = runner.invoke(app, ["plot"])
    assert result.exit_code == 1 and "no run folders" in result.stderr
