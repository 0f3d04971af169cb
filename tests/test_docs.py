"""The docs: the config reference lists exactly the keys and defaults the schemas have; the
README stays short and links every page; each page's contents list is its headings; every
page that quotes a run's output names the machine that produced it."""

import re

import pytest

from lora_cli.config.loading import ApproxConfig, Config, describe_schema
from tests.conftest import ROOT


def _section(heading: str) -> str:
    readme = (ROOT / "docs" / "configs.md").read_text()
    start = readme.index(heading)
    end = readme.find("\n#", start + len(heading))
    return readme[start : end if end != -1 else None]


@pytest.mark.parametrize("heading, schema", [("## Pipeline config keys", Config), ("## approx config keys", ApproxConfig)])
def test_readme_config_table_matches_the_schema(heading, schema):
    section = _section(heading)
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]+)`", section, flags=re.M))
    schema_rows = describe_schema(schema)
    assert set(rows) == {key for key, *_ in schema_rows}
    for key, _type, default, _help in schema_rows:
        assert rows[key] == _as_yaml(default), key


def _as_yaml(value) -> str:
    """A default as a YAML file writes it: null, true, 0.001."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


PAGES = sorted((ROOT / "docs").glob("*.md"))
MACHINE = re.compile(r"AMD EPYC|Intel Xeon|H200|GPU|CPU", re.I)


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[a-z-]+\.md)\)", readme))
    assert linked == {f"docs/{page.name}" for page in PAGES}
    commands = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `lora ")}
    from lora_cli.cli import app
    import typer

    assert commands == {f"lora {name}" for name in typer.main.get_command(app).commands}  # every command, one line each


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_page_lists_its_headings_and_every_link_resolves(page):
    from tools.docs_toc import with_contents

    text = page.read_text()
    assert "## Contents" in text and with_contents(text) == text, "contents out of date: run .venv/bin/python tools/docs_toc.py"
    for target in re.findall(r"\]\(([^)#\s]+\.(?:md|png))(?:#[^)]*)?\)", text):
        assert (page.parent / target).exists(), target
    for other, anchor in re.findall(r"\]\(([a-z-]+\.md)#([^)]+)\)", text):
        from tools.docs_toc import anchor as anchor_of, headings

        assert anchor in {anchor_of(h) for h in headings((page.parent / other).read_text())}, (other, anchor)


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_quoted_output_names_its_machine(page):
    """A block of a run's output (```console or ```text with a number) sits within 15 lines
    after a sentence that names the machine (or says it is a CPU or GPU run)."""
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("```console") or line.startswith("```text"):
            block = "\n".join(lines[i + 1 : lines.index("```", i + 1)])
            if re.search(r"\d\.\d{3}", block) and not block.lstrip().startswith("runs/"):
                before = "\n".join(lines[max(0, i - 15) : i]) + block
                assert MACHINE.search(before), f"{page.name}:{i + 1}: quoted output without the machine that produced it"


def test_the_quoted_8x8_demo_is_what_lora_approx_prints_on_this_machine(tmp_path):
    """The walkthrough's `lora approx` output, number for number, against a fresh run here."""
    import json

    from typer.testing import CliRunner

    from lora_cli.cli import app

    done = CliRunner().invoke(app, ["approx", "--run-dir", str(tmp_path / "a"), "--json"])
    assert done.exit_code == 0, done.output
    fresh = json.loads(done.stdout)
    page = (ROOT / "docs" / "walkthrough.md").read_text()
    quoted = page[page.index("$ lora approx"):]
    rows = re.findall(r"│\s+(\d+) │ (\d\.\d{6}) │", quoted[: quoted.index("Optimum (Eckart")])
    assert [(int(i), float(v)) for i, v in rows] == [(r["iteration"], round(r["loss"], 6)) for r in fresh["history"]]
    assert f"{fresh['optimal_loss']:.7f}" in quoted and f"{fresh['final_loss']:.7f}" in quoted
    assert all(f"{s:.6f}" in quoted for s in fresh["singular_values"])
