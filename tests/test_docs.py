"""The README's config reference lists exactly the keys the schema has."""

import re

from lora_cli.config import describe_schema
from tests.conftest import ROOT


def test_readme_config_table_matches_the_schema():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", readme, flags=re.M))
    assert documented == {key for key, *_ in describe_schema()}


def test_readme_defaults_match_the_schema():
    readme = (ROOT / "README.md").read_text()
    for key, _type, default, _help in describe_schema():
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]+)`", readme, flags=re.M)
        assert row, key
        assert row.group(1) == str(default), key
