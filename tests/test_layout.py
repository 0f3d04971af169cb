"""The architecture's promises, checked: a pure core, thin commands, small modules and functions."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lora_cli"
CORE = sorted(p.stem for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__")
FORBIDDEN_IN_CORE = ("lora_cli.config", "lora_cli.store", "lora_cli.stages", "lora_cli.commands", "rich", "matplotlib", "yaml", "pydantic")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("name", CORE)
def test_the_core_loads_no_config_store_rich_or_matplotlib(name):
    code = f"import sys, lora_cli.core.{name}; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith(FORBIDDEN_IN_CORE)] == []


def test_commands_never_import_each_other():
    commands = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__", "options", "output", "folders"}
    for path in (PACKAGE / "commands").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {node.module.rpartition(".")[2]} | {a.name for a in node.names if node.module == "lora_cli.commands"}
                if node.module.startswith("lora_cli.commands"):
                    assert not imported & (commands - {path.stem}), f"{path.name} imports {node.module}"


def test_no_module_over_300_lines_and_no_function_over_60():
    long_modules = [p.name for p in _modules() if len(p.read_text().splitlines()) > 300]
    long_functions = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long_modules == [] and long_functions == []


def test_the_command_line_starts_without_torch_pydantic_or_matplotlib():
    """`lora --help` stays fast: the heavy libraries load only in commands that use them."""
    code = "import sys, lora_cli.cli; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in ("torch", "pydantic", "matplotlib", "safetensors")] == []


def test_the_run_store_knows_no_config_schema_and_no_stage():
    """store/ is generic: kinds, stage order and file names come from stages/kinds.py."""
    for path in (PACKAGE / "store").glob("*.py"):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("lora_cli.config", "lora_cli.stages", "lora_cli.recipes")), path.name
        assert '"pretrain"' not in text and '"finetune"' not in text and '"merge"' not in text, path.name
