"""`lora report` in a real headless Chromium (the Debian package, driven by Playwright), with
every request that is not the report file itself blocked and recorded: no console error, no
request leaves the file, the page is not blank, and its text holds the final losses, optima
and SHA-256 hashes the manifest records; a sweep's table sorts and filters in the page."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.show.tables import fmt_loss
from tests.conftest import SMOKE

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed; install it with: apt-get install chromium (.ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: .venv/bin/pip install -e '.[test]'")
Image = pytest.importorskip("PIL.Image")

runner = CliRunner()
SMALL = ["--set", "pretrain.epochs=4", "--set", "finetune.epochs=4", "--set", "finetune.log_every=2"]


def lora(*args):
    done = runner.invoke(app, [str(a) for a in args])
    assert done.exit_code == 0, done.output
    return done


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    lora("run", SMOKE, "--rank", 2, *SMALL, "--run-dir", root / "run", "--report")
    lora("run", SMOKE, "--rank", 1, *SMALL, "--run-dir", root / "other")
    lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--seeds", "0,1", *SMALL, "--run-dir", root / "sweep", "--report", "--no-plot")
    lora("report", root / "run", root / "other", "--out", root / "compare.html")
    return root


def _open(browser, path: Path, shots: Path):
    """The report loaded with the network cut off: (page, console errors, requests blocked)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors, blocked, own = [], [], path.resolve().as_uri()

    def gate(route):
        if route.request.url == own:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(own)
    page.wait_for_load_state("load")
    shot = shots / f"{path.stem}-{path.parent.name}.png"
    page.screenshot(path=str(shot), full_page=True)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    return page, errors, blocked


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _holds_run(text: str, folder: Path):
    manifest = _manifest(folder)
    for stage in ("pretrain", "finetune"):
        record = manifest["stages"][stage]
        for key in ("final_loss", "optimal_loss", "final_test_loss"):
            assert fmt_loss(record[key]) in text, (stage, key)
    for rel, entry in manifest["files"].items():
        if rel.endswith(".safetensors"):
            assert entry["sha256"] in text, rel
    assert manifest["versions"]["torch"] in text and manifest["versions"]["machine"] in text


def test_a_run_report_opens_offline_and_holds_the_manifests_numbers(browser, folders, tmp_path):
    page, errors, blocked = _open(browser, folders / "run" / "report.html", tmp_path)
    assert errors == [] and blocked == []
    text = page.inner_text("body")
    _holds_run(text, folders / "run")
    assert "adapter:" in text and page.locator("svg").count() >= 3  # the config, and the figures inline


def test_a_sweep_report_sorts_and_filters_its_trials_in_the_page(browser, folders, tmp_path):
    page, errors, blocked = _open(browser, folders / "sweep" / "report.html", tmp_path)
    assert errors == [] and blocked == []
    rows = [json.loads(line) for line in (folders / "sweep" / "results.jsonl").read_text().splitlines()]
    text = page.inner_text("body")
    for row in rows:
        assert row["trial"] in text and fmt_loss(row["final_loss"]) in text and fmt_loss(row["gap"]) in text
        assert fmt_loss(row["final_source_loss"]) in text
    keys = [h.get_attribute("data-key") for h in page.locator("#trials-table th").all()]
    assert {"final_source_loss", "intruders", "optimum_intruders"} <= set(keys)
    for trial in (folders / "sweep" / "trials").iterdir():
        assert _manifest(trial)["files"]["adapter/adapter_model.safetensors"]["sha256"] in text
    assert "Seeds aggregated" in text and "mean ± std" in text
    column = [h.get_attribute("data-key") for h in page.locator("#trials-table th").all()].index("gap")
    page.locator("#trials-table th").nth(column).click()
    shown = [float(c.get_attribute("data-v")) for c in page.locator(f"#trials-table tbody tr td:nth-child({column + 1})").all()]
    assert shown == sorted(r["gap"] for r in rows)
    page.locator("#trials-table-filter").fill("seed=1")
    visible = page.locator("#trials-table tbody tr:not([hidden])")
    assert visible.count() == sum(r["seed"] == 1 for r in rows) == 2
    assert page.inner_text("#trials-table-count") == "2"
    assert errors == []


def test_a_comparison_report_puts_the_runs_side_by_side(browser, folders, tmp_path):
    page, errors, blocked = _open(browser, folders / "compare.html", tmp_path)
    assert errors == [] and blocked == []
    text = page.inner_text("body")
    assert "adapter.rank" in text and "Config keys that differ" in text
    _holds_run(text, folders / "run")
    _holds_run(text, folders / "other")
