"""Property-based bad input: every malformed config or argument is one short error line and
exit 1 or 2, never a traceback. Derandomized, so CI runs the same cases every time."""

import math

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.config.loading import describe_schema, load_config
from lora_cli.config.overrides import parse_set_option
from lora_cli.errors import ConfigError
from tests.conftest import SMOKE

runner = CliRunner()
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SMOKE_DICT = load_config(SMOKE).to_dict()  # resolved: every section present, nested ones too, so any key can be set
KEYS = [key for key, *_ in describe_schema()]
CASES: set[str] = set()


@pytest.fixture(autouse=True, scope="module")
def _runs_elsewhere(tmp_path_factory):
    """Should a case ever start a run, it lands in a temporary folder, not the repo."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LORA_RUNS_DIR", str(tmp_path_factory.mktemp("fuzz-runs")))
    yield
    patch.undo()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _check(args: list[str], case: str) -> None:
    CASES.add(case)
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2), (args, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) >= 1 and "Traceback" not in result.output, result.output
    assert all(len(line) < 600 for line in errors), errors


def _invalid(doc: object) -> bool:
    """True when the config loader rejects `doc` (valid docs would start training)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(doc))
        try:
            cfg = load_config(path)
        except ConfigError:
            return True
    return cfg.data.n * (cfg.data.d_in + cfg.data.d_out) > 10**13  # refused for memory instead


@FUZZ
@given(key=st.sampled_from(KEYS), value=scalars)
def test_one_bad_value_in_a_config_file(tmp_path_factory, key, value):
    doc = yaml.safe_load(yaml.safe_dump(SMOKE_DICT))
    node = doc
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    assume(_invalid(doc))
    path = tmp_path_factory.mktemp("fuzz") / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    _check(["run", str(path)], f"value {key}={value!r}")


@FUZZ
@given(doc=st.one_of(scalars, st.dictionaries(st.text(min_size=1, max_size=8), scalars, min_size=1, max_size=4)))
def test_arbitrary_documents(tmp_path_factory, doc):
    assume(doc != {} and _invalid(doc))
    path = tmp_path_factory.mktemp("fuzz") / "doc.yaml"
    path.write_text(yaml.safe_dump(doc))
    _check(["validate", str(path)], f"doc {doc!r}")


@FUZZ
@given(data=st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "raw.yaml"
    path.write_bytes(data)
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
        assume(not isinstance(doc, dict) or _invalid(doc))
    except (UnicodeDecodeError, yaml.YAMLError):
        pass
    _check(["validate", str(path)], f"bytes {data!r}")


flag_values = {
    "--rank": st.one_of(st.integers(max_value=0), st.integers(min_value=33), st.text(min_size=1, max_size=6)),
    "--alpha": st.one_of(st.floats(max_value=0.0), st.just("nan"), st.just("inf"), st.text(min_size=1, max_size=6)),
    "--epochs": st.one_of(st.integers(max_value=0), st.text(min_size=1, max_size=6)),
    "--seed": st.one_of(st.integers(max_value=-1), st.text(min_size=1, max_size=6)),
    "--engine": st.text(min_size=1, max_size=8).filter(lambda v: v not in ("fast", "reference")),
    "--device": st.text(min_size=1, max_size=8).filter(lambda v: v not in ("auto", "cpu", "cuda")),
    "--set": st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(["", "abc", "-5", "nan", "[1]", "{a: 1}", "1e400", "0"])),
        st.text(min_size=1, max_size=15).filter(lambda v: "=" not in v),
        st.builds(lambda k: f"{k}=1", st.text(min_size=1, max_size=10).filter(lambda k: k not in KEYS and "=" not in k)),
    ),
}


@FUZZ
@given(flag=st.sampled_from(sorted(flag_values)), data=st.data())
def test_bad_command_line_values(flag, data):
    value = data.draw(flag_values[flag])
    text = str(value)
    if flag == "--set":
        assume(not _valid_override(text))  # a valid override would start training
    if flag == "--alpha" and not isinstance(value, str):
        assume(not (math.isfinite(value) and value > 0))
    assume("\x00" not in text)
    _check(["run", str(SMOKE), flag, text], f"flag {flag} {text!r}")


def _valid_override(text: str) -> bool:
    """Whether `--set text` passes the CLI's own parser and the config's checks."""
    try:
        key, value = parse_set_option(text)
        load_config(SMOKE, [("--set", key, value)])
    except ConfigError:
        return False
    return True


def test_the_override_filter_tells_valid_from_invalid():
    assert _valid_override("adapter.rank=2") and _valid_override("data.noise_std=0")
    assert not _valid_override("adapter.rank=0") and not _valid_override("nokey=1") and not _valid_override("x")


def test_at_least_200_distinct_cases_ran():
    """Runs after the four properties above (pytest keeps file order)."""
    if len(CASES) < 4:
        pytest.skip("run the whole module to count its cases")
    assert len(CASES) >= 200, len(CASES)
    print(f"\n{len(CASES)} distinct malformed inputs, each refused cleanly")
