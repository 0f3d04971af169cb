"""Every command line the README, the docs/ pages and `--help` show runs (issue 22, class 20),
exactly as shown, in a folder whose configs are the shipped ones shrunk to seconds (same keys,
smaller data and fewer epochs) and where the run folders they name exist. A line shown failing
(an error example) must fail in one line; every other must succeed."""

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import ROOT

runner = CliRunner()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(page.read_text() for page in PAGES)  # every page a newcomer reads
PLACEHOLDER = re.compile(r"[\[…]|\b(CONFIG|DIR|SPEC|RUN_DIR|SWEEP_DIR|SWEEP|FILE)\b")
RUN_FOLDER = re.compile(r"runs/([a-z0-9-]+?)-(sweep-)?\d{8}T\d{6}Z")
SKIP = {
    "lora run --device cuda",  # needs a GPU: tests/test_cuda.py
    "lora merge runs in one process; start it without torchrun",  # an error message quoted, not a command
    "lora sweep --base",  # a flag named in prose, its folder left out
}
SMALL = {"n": 256, "d_in": 65, "d_out": 64, "epochs": 3, "batch_size": 64}  # upper bounds


def _first_iteration(loop: str) -> list[str]:
    """The commands of a shell `for v in a b; do …; done` line, with each variable at its first value."""
    values = {name: shlex.split(items)[0] for name, items in re.findall(r"for (\w+) in ([^;]+);", loop)}
    body = loop.rsplit(" do ", 1)[1].split("; done")[0]
    for name, value in values.items():
        body = body.replace(f"${name}", value)
    return [part.strip() for part in body.split(";")]


def readme_commands() -> list[str]:
    found = [line.split("  #")[0].strip() for line in re.findall(r"^\$ (lora .*)$", README, re.M)]
    for span in re.findall(r"`([^`\n]+)`", README):
        if span in SKIP:
            continue
        if span.startswith("for ") and "; done" in span:
            found += _first_iteration(span)
        elif span.startswith("lora "):
            found += [part.strip() for part in span.split(";")]
    return found


def help_commands() -> list[str]:
    """What each command's --help (and the top --help) shows after Example:, Try:, Save it: or Start with:."""
    command = typer.main.get_command(app)
    texts = [command.epilog or ""] + [sub.help or "" for sub in command.commands.values()]
    found = []
    for text in texts:
        for shown in re.findall(r"(?:Example|Try|Save it|Start with): (.+)$", text, re.M):
            found += [re.sub(r"\s+\(.*$", "", part).strip() for part in shown.split(" or ")]
    return found


def _runnable(line: str) -> bool:
    """A whole command line: a command with its arguments (a bare name in prose only names one)."""
    return line.startswith("lora ") and (len(line.split()) > 2 or line in ("lora approx", "lora merge", "lora runs"))


COMMANDS = list(dict.fromkeys(line for line in readme_commands() + help_commands() if _runnable(line) and not PLACEHOLDER.search(line)))
FAILING = {"lora run configs/smoke.yaml --rank 40", "lora run configs/smoke.yaml --set data.n=10"}  # the README's error examples
EITHER = {"lora merge"}  # shown failing (finetune not run) and, elsewhere, as the third stage


def _shrink(doc: dict, swept: set[str] = frozenset()) -> dict:
    """A pipeline config's (or a sweep spec's config:) sizes capped by SMALL, but for the keys a
    sweep's axes vary (`swept`: a value set there too is refused); smoke keeps its own."""
    for section, keys in (("data", ("n", "d_in", "d_out")), ("pretrain", ("epochs", "batch_size")), ("finetune", ("epochs", "batch_size"))):
        part = doc.setdefault(section, {})
        for key in keys:
            if f"{section}.{key}" not in swept:
                part[key] = min(part.get(key, SMALL[key]), SMALL[key])
    return doc


def _shrink_axes(grid: dict) -> None:
    """A grid axis over a size SMALL caps: its values capped too, each kept distinct (0, 1, 10, 100 epochs -> 0, 1, 5, 6)."""
    for key, values in grid.items():
        leaf = key.rsplit(".", 1)[-1]
        if key.split(".")[0] in ("data", "pretrain", "finetune") and leaf in SMALL and all(isinstance(v, int) for v in values):
            grid[key] = [min(v, SMALL[leaf] + i) for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A working folder with configs/ shrunk, the run folders the commands name, and a PEFT adapter."""
    root = tmp_path_factory.mktemp("shown")
    for path in (ROOT / "configs").rglob("*.yaml"):
        target = root / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load(path.read_text())
        if path.name not in ("smoke.yaml", "approx.yaml"):
            if "grid" in doc or "zip" in doc or "seeds" in doc:
                swept = set(doc.get("grid", {})) | {key for point in doc.get("zip", []) for key in point}
                _shrink(doc.setdefault("config", {}), swept)
                _shrink_axes(doc.get("grid", {}))
            else:
                _shrink(doc)
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def _prepare(lab: Path, line: str) -> None:
    """Make the run folder `line` names, as far as the command expects it: pretrained for a
    finetune, finetuned for a merge, finished otherwise (a sweep's: swept); and a PEFT adapter."""
    matches = list(RUN_FOLDER.finditer(line))  # every folder it names (lora compare names two)
    for match in matches:
        if (lab / match.group(0)).exists():
            continue
        name, prefix, command = match.group(0), match.group(1), line.split()[1]
        steps = {
            "sweep": [["sweep", f"configs/sweeps/{prefix}.yaml", "--run-dir", name, "--no-plot"]],
            "finetune": [["pretrain", "-c", f"configs/{prefix}.yaml", "--run-dir", name]],
            "merge": [["pretrain", "-c", f"configs/{prefix}.yaml", "--run-dir", name], ["finetune", "--run-dir", name]],
        }.get("sweep" if match.group(2) else command, [["run", f"configs/{prefix}.yaml", "--run-dir", name]])
        for step in steps:
            made = runner.invoke(app, step)
            assert made.exit_code == 0, made.output
    if not matches and line.startswith("lora finetune"):  # the newest run, as a person about to finetune has
        made = runner.invoke(app, ["pretrain", "-c", "configs/smoke.yaml"])
        assert made.exit_code == 0, made.output
    if "my_peft_adapter" in line:  # a PEFT adapter for the model the command merges onto: the newest run's
        import shutil

        from lora_cli.store.run_index import newest

        target = newest(lab / "runs", "pipeline")
        if not (target / "adapter/adapter_model.safetensors").exists():
            assert runner.invoke(app, ["finetune", "--run-dir", str(target), "--method", "lora", "--force"]).exit_code == 0
        shutil.rmtree(lab / "my_peft_adapter", ignore_errors=True)
        shutil.copytree(target / "adapter", lab / "my_peft_adapter")


def test_the_commands_were_found():
    assert len(COMMANDS) >= 25, COMMANDS
    assert "lora sweep configs/sweeps/rank-vs-shift-rank.yaml" in COMMANDS  # from lora sweep --help
    assert "lora run configs/rank-vs-shift.yaml --rank 1" in COMMANDS  # the first pass of a README loop


@pytest.mark.parametrize("line", COMMANDS)
def test_a_shown_command_runs_as_shown(lab, monkeypatch, line):
    monkeypatch.chdir(lab)
    monkeypatch.delenv("LORA_RUNS_DIR", raising=False)
    _prepare(lab, line)
    words = shlex.split(line.split(" > ")[0])
    result = runner.invoke(app, words[1:])
    errors = [text for text in result.stderr.splitlines() if text.startswith("error")]
    if line in FAILING or line in EITHER and result.exit_code:
        assert result.exit_code in (1, 2) and errors and "Traceback" not in result.output, result.output
    else:
        assert result.exit_code == 0, (line, result.output)
