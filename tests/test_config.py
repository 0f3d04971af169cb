"""The config schema: defaults are the blog recipe; every bad value names its key and source."""

import pytest

from lora_cli.config.loading import ApproxConfig, Config, config_to_yaml, detect_schema, load_config
from lora_cli.config.overrides import parse_set_option
from lora_cli.errors import ConfigError
from tests.conftest import CONFIGS, SMOKE


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_its_command(path):
    schema = detect_schema(path)
    assert schema is (ApproxConfig if path.name == "approx.yaml" else Config)
    cfg = load_config(path, schema=schema)
    assert isinstance(cfg, schema)
    assert path.read_text().startswith("# Used by: lora "), "each config opens with the command that uses it"


def test_defaults_are_the_blog_recipe():
    cfg = load_config()
    assert (cfg.data.n, cfg.data.d_in, cfg.data.d_out, cfg.data.noise_std) == (10000, 1001, 1000, 0.0)
    assert cfg.shift.value == 1.0
    for stage in (cfg.pretrain, cfg.finetune):
        assert (stage.epochs, stage.batch_size, stage.lr, stage.log_every) == (100, 128, 1e-3, 10)
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.finetune.seed) == (1, 1.0, None)
    assert load_config(CONFIGS / "posit.yaml") == cfg


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "my-exp.yaml"
    path.write_text("seed: 3\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.seed) == ("my-exp", 3)


def test_yaml_1_2_floats_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pretrain:\n  lr: 1e-3\nfinetune:\n  alpha: 2\n")
    cfg = load_config(path)
    assert cfg.pretrain.lr == 1e-3 and isinstance(cfg.adapter.alpha, float)
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(cfg))
    assert load_config(again) == cfg


def test_overrides_apply_last_and_parse_values():
    key, value = parse_set_option("finetune.lr=5e-4")
    assert (key, value) == ("finetune.lr", 5e-4)
    cfg = load_config(SMOKE, [("--set", key, value), ("--rank", "adapter.rank", 3)])
    assert (cfg.finetune.lr, cfg.adapter.rank) == (5e-4, 3)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("adapter.rank", 0, "--set: adapter.rank = 0 is out of range: must be ≥ 1"),
        ("adapter.rank", 33, "adapter.rank = 33 is out of range: must be 1 ≤ rank ≤ min(d_in, d_out) = 32"),
        ("pretrain.batch_size", 513, "pretrain.batch_size = 513 is out of range: must be ≤ data.n = 512"),
        ("pretrain.lr", 0.0, "pretrain.lr = 0.0 is out of range: must be > 0.0"),
        ("pretrain.lr", float("inf"), "pretrain.lr = inf is not allowed: must be a finite number > 0.0"),
        ("finetune.epochs", -1, "finetune.epochs = -1 is out of range: must be ≥ 0"),
        ("finetune.epochs", 2.5, "finetune.epochs = 2.5 is not allowed: must be a whole number ≥ 0"),
        ("data.n", True, "data.n = True is not allowed: must be a whole number ≥ 1"),
        ("data.d_in", "big", "data.d_in = 'big' is not allowed: must be a whole number ≥ 1"),
        ("adapter.init", "zeros", "adapter.init = 'zeros' is not allowed: must be one of normal, kaiming, gaussian, orthogonal, pissa, olora, lora_one, lora_ga, lora_ga_paper, eva, corda_ipm, corda_kpm, milora"),
        ("finetune.rnak", 2, "unknown key finetune.rnak; did you mean adapter.rank?"),
        ("data", 5, "data must be a mapping of keys, found 5"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_range(key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [("--set", key, value)])
    assert len(err.value.problems) == 1
    assert expected in err.value.problems[0]
    assert err.value.problems[0].startswith("--set: ")


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  n: -3\nfinetune:\n  rank: 2\n  bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = err.value.problems
    assert len(problems) == 2, "every problem is reported, not just the first"
    assert all(p.startswith(str(path)) for p in problems)
    assert any("data.n = -3 is out of range: must be ≥ 1" in p for p in problems)
    assert any("unknown key finetune.bogus" in p for p in problems)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the file is empty"),
        ("- 1\n- 2\n", "expected a mapping of sections"),
        ("42\n", "expected a mapping of sections"),
        ("data: {n: 1\n", "not valid YAML (line"),
        ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
        ("a: &x {n: 1}\ndata: *x\n", "aliases (*name) are not allowed"),
        ("data:\n\tn: 1\n", "not valid YAML"),
    ],
)
def test_malformed_yaml_is_one_clear_problem(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_unreadable_files(tmp_path):
    cases = {"missing.yaml": None, "bin.yaml": b"\x00\x01\x02", "latin.yaml": "seed: 1 # caf\xe9\n".encode("latin-1")}
    messages = {"missing.yaml": "no such file", "bin.yaml": "binary file", "latin.yaml": "not UTF-8"}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=messages[name]):
            load_config(tmp_path / name)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_set_option_needs_key_and_value():
    for text in ("adapter.rank", "=3", "adapter.rank={a: 1}"):
        with pytest.raises(ConfigError):
            parse_set_option(text)


def test_renamed_keys_of_older_configs_and_run_folders_still_load(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("finetune:\n  rank: 3\n  alpha: 6.0\n  init: kaiming\n  epochs: 7\n")
    cfg = load_config(old)
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.init, cfg.finetune.epochs) == (3, 6.0, "kaiming", 7)
    assert load_config(SMOKE, [("--set", "finetune.rank", 2)]).adapter.rank == 2
    both = tmp_path / "both.yaml"
    both.write_text("finetune:\n  rank: 3\nadapter:\n  rank: 2\n")
    with pytest.raises(ConfigError, match="finetune.rank and adapter.rank are both set; keep adapter.rank"):
        load_config(both)


def test_a_typo_of_an_old_key_suggests_its_new_name():
    with pytest.raises(ConfigError, match=r"unknown key finetune.rnak; did you mean adapter.rank\?"):
        load_config(SMOKE, [("--set", "finetune.rnak", 2)])


def test_rules_across_keys_wait_for_the_whole_config():
    from lora_cli.config.loading import check_values

    check_values([("--set", "pretrain.batch_size", 20000)])  # fine alone: data.n is the run's
    with pytest.raises(ConfigError, match="pretrain.batch_size = 20000 is out of range: must be ≤ data.n = 512"):
        load_config(SMOKE, [("--set", "pretrain.batch_size", 20000)])


def test_every_shipped_config_points_to_lora_schema():
    for path in CONFIGS.glob("*.yaml"):
        kind = "approx" if detect_schema(path) is ApproxConfig else "pipeline"
        assert f"lora schema {kind}" in "".join(path.read_text().splitlines(keepends=True)[:3]), path.name
    for path in (CONFIGS / "sweeps").glob("*.yaml"):
        head = path.read_text().splitlines()[:4]
        assert head[0] == f"# Used by: lora sweep configs/sweeps/{path.name}" + head[0].split(path.name, 1)[1], path.name
        assert "lora schema sweep" in head[1] and head[2].startswith("# Question:"), path.name


def test_every_shipped_sweep_expands():
    from lora_cli.config.sweep import load_sweep

    sizes = {path.name: len(load_sweep(path).trials) for path in (CONFIGS / "sweeps").glob("*.yaml")}
    assert sizes == {"rank-vs-shift-rank.yaml": 15, "inits.yaml": 36, "rslora-vs-standard.yaml": 14, "methods.yaml": 8}


def test_the_json_schema_agrees_with_the_loader(tmp_path):
    """An independent validator (jsonschema) reading `lora schema` accepts what lora accepts."""
    import json

    import jsonschema
    import yaml
    from typer.testing import CliRunner

    from lora_cli.cli import app
    from lora_cli.config import KINDS
    from lora_cli.config.schemas import SCHEMAS

    assert KINDS == (*SCHEMAS, "sweep")
    for kind in KINDS:
        result = CliRunner().invoke(app, ["schema", kind])
        assert result.exit_code == 0
        validator = jsonschema.Draft202012Validator(json.loads(result.stdout))
        shipped = [p for p in CONFIGS.glob("*.yaml") if (detect_schema(p) is ApproxConfig) == (kind == "approx")]
        shipped = sorted((CONFIGS / "sweeps").glob("*.yaml")) if kind == "sweep" else shipped
        for path in shipped:
            assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    validator = jsonschema.Draft202012Validator(json.loads(CliRunner().invoke(app, ["schema"]).stdout))
    for bad in ({"adapter": {"rank": 0}}, {"adapter": {"init": "zeros"}}, {"data": {"nn": 1}}, {"pretrain": {"lr": 0}}):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ConfigError):
            load_config(overrides=[("--set", f"{s}.{k}", v) for s, d in bad.items() for k, v in d.items()])


def test_the_old_gaussian_init_name_reads_as_the_blog_s_normal(tmp_path):
    """Before the adapter: section, finetune.init 'gaussian' meant N(0, 1); PEFT's 'gaussian'
    (std 1/r) now has that name, so an old folder must not change meaning."""
    old = tmp_path / "old.yaml"
    old.write_text("finetune:\n  init: gaussian\n")
    assert load_config(old).adapter.init == "normal"
    assert load_config(SMOKE, [("--set", "finetune.init", "gaussian")]).adapter.init == "normal"
    assert load_config(SMOKE, [("--set", "adapter.init", "gaussian")]).adapter.init == "gaussian"


def test_the_orthogonal_init_needs_an_even_rank():
    with pytest.raises(ConfigError, match="adapter.rank = 3 is not allowed: the orthogonal init needs an even rank"):
        load_config(SMOKE, [("--set", "adapter.init", "orthogonal"), ("--rank", "adapter.rank", 3)])
    assert load_config(SMOKE, [("--set", "adapter.init", "orthogonal"), ("--rank", "adapter.rank", 4)]).adapter.rank == 4


def test_a_lowrank_shift_cannot_have_more_terms_than_the_layer_allows():
    with pytest.raises(ConfigError, match=r"shift.rank = 40 is out of range: must be ≤ min\(d_in, d_out\) = 32"):
        load_config(SMOKE, [("--set", "shift.kind", "lowrank"), ("--set", "shift.rank", 40)])
    assert load_config(SMOKE, [("--set", "shift.rank", 40)]).shift.rank == 40  # unused by add: no rule
