"""Sweep specs expand to the product grid × zip × seeds, and every problem is named at once."""

import pytest

from lora_cli.config.sweep import load_sweep
from lora_cli.errors import ConfigError
from tests.conftest import SMOKE


def _spec(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(f"base: {SMOKE}\n" + text)
    return path


def test_product_zip_and_seeds_in_order(tmp_path):
    spec = _spec(tmp_path, """
grid: {adapter.rank: [1, 2], adapter.init: [normal, kaiming]}
zip: [{adapter.alpha: 1.0, adapter.scaling: standard}, {adapter.alpha: 8.0, adapter.scaling: rslora}]
seeds: [0, 3]
config: {finetune: {epochs: 5}}
""")
    sweep = load_sweep(spec)
    assert sweep.axes == ("adapter.rank", "adapter.init", "adapter.alpha", "adapter.scaling", "seed")
    assert len(sweep.trials) == 2 * 2 * 2 * 2
    first, last = sweep.trials[0], sweep.trials[-1]
    assert first.values == {"adapter.rank": 1, "adapter.init": "normal", "adapter.alpha": 1.0, "adapter.scaling": "standard", "seed": 0}
    assert last.id == "015-rank-2_init-kaiming_alpha-8_scaling-rslora_seed-3"
    assert last.config.adapter.scaling == "rslora" and last.config.seed == 3 and last.config.finetune.epochs == 5
    assert len({t.id for t in sweep.trials}) == 16
    assert {t.config.data for t in sweep.trials} == {sweep.base.data}  # the base config's own keys stay


def test_inline_grid_on_a_config_and_old_key_names(tmp_path):
    sweep = load_sweep(SMOKE, grid=[("finetune.rank", [1, 4]), ("shift.rank", [1, 2])], sets=[("--set", "shift.kind", "lowrank")])
    assert sweep.axes == ("adapter.rank", "shift.rank")
    assert [t.id for t in sweep.trials][:2] == ["000-adapter.rank-1_shift.rank-1", "001-adapter.rank-1_shift.rank-2"]
    assert sweep.trials[3].config.adapter.rank == 4 and sweep.trials[3].config.shift.kind == "lowrank"


def test_the_stored_spec_expands_to_the_same_trials(tmp_path):
    from lora_cli.config.yamlio import dump_yaml

    sweep = load_sweep(SMOKE, grid=[("adapter.rank", [1, 2])], sets=[("--set", "finetune.epochs", 3)])
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(sweep.spec))
    assert load_sweep(again).grid() == sweep.grid()


def test_every_bad_name_and_value_is_named_with_its_axis(tmp_path):
    spec = _spec(tmp_path, """
grid: {adapter.rank: [1, 0], adapter.rnak: [2], adapter.init: [normal, nope]}
zip: [{adapter.alpha: 1.0}, {adapter.alpha: -2.0}]
seeds: [1, 1]
""")
    with pytest.raises(ConfigError) as caught:
        load_sweep(spec)
    lines = caught.value.problems
    assert any("grid: adapter.rank = 0 is out of range" in line for line in lines)
    assert any("unknown key adapter.rnak; did you mean adapter.rank?" in line for line in lines)
    assert any("adapter.init = 'nope' is not allowed" in line for line in lines)
    assert any("zip[1]: adapter.alpha = -2.0 is out of range" in line for line in lines)
    assert any("seeds: seed lists a value more than once" in line for line in lines)
    assert all(line.startswith(str(spec)) for line in lines)


def test_rules_that_span_keys_name_the_trial(tmp_path):
    spec = _spec(tmp_path, "grid: {adapter.rank: [1, 2], adapter.init: [orthogonal]}\n")
    with pytest.raises(ConfigError) as caught:
        load_sweep(spec)
    assert caught.value.problems == [
        f"{spec}: trial 000-rank-1_init-orthogonal: adapter.rank = 1 is not allowed: the orthogonal init needs an even rank"
    ]


def test_duplicates_are_refused(tmp_path):
    same = _spec(tmp_path, "grid: {adapter.lr_ratio: [1.0, 1]}\n")  # two spellings of one value
    with pytest.raises(ConfigError, match="trials 000-lr_ratio-1 and 001-lr_ratio-1 are the same config"):
        load_sweep(same)
    twice = _spec(tmp_path, "grid: {adapter.rank: [1, 2]}\nzip: [{adapter.rank: 4}]\n")
    with pytest.raises(ConfigError, match="adapter.rank is swept by more than one axis"):
        load_sweep(twice)
    with pytest.raises(ConfigError, match="nothing to sweep"):
        load_sweep(SMOKE)


def test_plot_names_a_swept_axis_and_is_stored(tmp_path):
    from lora_cli.config.yamlio import dump_yaml

    spec = _spec(tmp_path, "grid: {finetune.n: [64, 128]}\nzip: [{adapter.rank: 1}, {adapter.rank: 2}]\nplot: {x: finetune.n, loss: test}\n")
    sweep = load_sweep(spec)
    assert (sweep.plot.x, sweep.plot.loss) == ("finetune.n", "test")
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(sweep.spec))
    assert load_sweep(again).plot == sweep.plot  # the sweep folder's own spec keeps it
    with pytest.raises(ConfigError, match="plot.x is data.n, which no axis sweeps; name one of finetune.n, adapter.rank"):
        load_sweep(_spec(tmp_path, "grid: {finetune.n: [64, 128]}\nzip: [{adapter.rank: 1}, {adapter.rank: 2}]\nplot: {x: data.n}\n"))
    with pytest.raises(ConfigError, match="loss"):
        load_sweep(_spec(tmp_path, "grid: {adapter.rank: [1, 2]}\nplot: {loss: source}\n"))


def test_plot_columns_must_be_results_columns(tmp_path):
    spec = _spec(tmp_path, "grid: {adapter.rank: [1, 2]}\nplot: {columns: [optimum_column_angle, angle]}\n")
    with pytest.raises(ConfigError, match="plot.columns names angle, not a column of results.csv; choose from rank, "):
        load_sweep(spec)
    ok = load_sweep(_spec(tmp_path, "grid: {adapter.rank: [1, 2]}\nplot: {columns: [optimum_column_angle]}\n"))
    assert ok.plot.columns == ["optimum_column_angle"]
