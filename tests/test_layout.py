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


@pytest.mark.process
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


@pytest.mark.process
def test_the_command_line_starts_without_torch_pydantic_or_matplotlib():
    """`lora --help` stays fast: the heavy libraries load only in commands that use them."""
    code = "import sys, lora_cli.cli; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in ("torch", "pydantic", "matplotlib", "safetensors")] == []


def _imports(folder: str) -> dict[str, set[str]]:
    """Each module of a folder -> the lora_cli modules it imports (at the top or inside functions)."""
    out = {}
    for path in sorted((PACKAGE / folder).glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lora_cli"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lora_cli")}
        out[path.name] = found
    return out


def _reaching(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{folder}/{name} imports {m}" for name, found in _imports(folder).items() for m in sorted(found) if m.startswith(forbidden)]


def test_the_run_store_knows_no_config_schema_no_stage_no_training_and_no_method():
    """store/ is generic: kinds, stage order and file names come from stages/kinds.py; the
    checkpoint format lives with training (train/checkpoint.py), the PEFT format with the methods."""
    assert _reaching("store", ("lora_cli.config", "lora_cli.stages", "lora_cli.recipes", "lora_cli.train", "lora_cli.core", "lora_cli.methods")) == []
    for path in (PACKAGE / "store").glob("*.py"):
        text = path.read_text()
        assert '"pretrain"' not in text and '"finetune"' not in text and '"merge"' not in text, path.name


def test_each_layer_imports_only_the_layers_below_it():
    """core is the problem alone; methods know no config; training knows no stage; show draws
    stored results and never recomputes them (no recipes, no training). The generic store is
    below them all (file helpers, the checkpoint's epoch key)."""
    upper = ("lora_cli.config", "lora_cli.stages", "lora_cli.recipes", "lora_cli.commands", "lora_cli.show")
    assert _reaching("core", (*upper, "lora_cli.store", "lora_cli.methods", "lora_cli.train", "lora_cli.measure")) == []
    assert _reaching("methods", (*upper, "lora_cli.train")) == []
    assert _reaching("train", upper) == []
    assert _reaching("measure", ("lora_cli.stages", "lora_cli.recipes", "lora_cli.commands", "lora_cli.config")) == []
    assert _reaching("show", ("lora_cli.recipes", "lora_cli.train", "lora_cli.commands")) == []


def test_config_modules_import_no_cycle():
    """sweep.py builds on loading.py, so loading.py never imports sweep.py (json_schema.py sees both)."""
    assert not any(m.startswith("lora_cli.config.sweep") for m in _imports("config")["loading.py"])


def test_the_package_root_holds_only_the_entry_points():
    """Every module belongs to a folder named for its role."""
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py", "errors.py"]


def test_every_method_has_an_engine_that_trains_it_alone():
    from lora_cli.methods.registry import METHODS
    from lora_cli.train.engines import ENGINES

    assert all(any(name in e.trains and not e.lanes for e in ENGINES.values()) for name in METHODS)


def _branches_on(names: set[str]) -> list[str]:
    """Comparisons (==, !=, in) of something with one of `names` as a string literal, by place."""
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            literals = [e for side in sides for e in (side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side])]
            if any(isinstance(e, ast.Constant) and e.value in names for e in literals):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_only_the_stage_declaration_branches_on_a_stage_name():
    """What a stage does is read from config/stages.py's properties, never by testing its name."""
    from lora_cli.config.stages import PIPELINE

    assert _branches_on(set(PIPELINE)) == []


def test_only_the_methods_branch_on_a_method_name():
    """What a method is (its words, its floor, what it trains) is asked of the method."""
    from lora_cli.methods.registry import METHODS

    aliases = ("commands/options.py", "stages/results.py")  # --dora, and records written before methods, name DoRA
    assert [place for place in _branches_on(set(METHODS)) if not place.startswith(("methods/", *aliases))] == []


def test_every_declared_stage_has_a_record_type_and_a_cost():
    from lora_cli.config.stages import PIPELINE
    from lora_cli.runtime.resources import stage_bytes, step_work
    from lora_cli.config.schemas import Config
    from lora_cli.stages.results import RECORDS

    assert set(PIPELINE) <= set(RECORDS)
    assert all(sum(stage_bytes(Config(), s).values()) > 0 and step_work(Config(), s) > 0 for s in PIPELINE)
    with pytest.raises(ValueError, match="no memory"):
        stage_bytes(Config(), "distill")
