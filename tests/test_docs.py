"""The README's config references list exactly the keys and defaults the schemas have."""

import re

import pytest

from lora_cli.config.loading import ApproxConfig, Config, describe_schema
from tests.conftest import ROOT


def _section(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(heading)
    end = readme.find("\n#", start + len(heading))
    return readme[start : end if end != -1 else None]


@pytest.mark.parametrize("heading, schema", [("### Pipeline config keys", Config), ("### approx config keys", ApproxConfig)])
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
