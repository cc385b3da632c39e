"""compare's statistics against hand-computed values, and its checks of the two arms (no
training here; tests/e2e/test_compare.py trains real arms)."""

import json
import math

import numpy as np
import pytest
import scipy.stats

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError, DataError
from jaxtrain.models import model_config
from jaxtrain.tools.compare import (
    Arm,
    _check_same_compare,
    analyze,
    arm_b_config,
    check_comparable,
    format_report,
    pairing,
    parse_arm_overrides,
    per_seed,
    run_compare,
)
from jaxtrain.tools.paired_stats import paired_stats, paired_t_test, sign_flip_p_value

# --- statistics ------------------------------------------------------------------------------


def test_paired_stats_match_hand_computed_values():
    # d = b - a = [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), 2 degrees of freedom.
    # With 2 df the t distribution has closed forms: two-sided p = 1 - t / sqrt(2 + t^2), and
    # the 0.975 quantile is (2q - 1) / sqrt(2 q (1 - q)) with q = 0.975, i.e. 4.302653.
    s = paired_stats([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    t = 2 * math.sqrt(3)
    q = 0.975
    t_crit = (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    assert (s.n, s.mean_a, s.mean_b, s.diff_mean, s.diff_std) == (3, 20.0, 22.0, 2.0, 1.0)
    assert s.std_a == pytest.approx(10.0) and s.std_b == pytest.approx(11.0)
    assert s.t == pytest.approx(t)
    assert s.p_t == pytest.approx(1 - t / math.sqrt(2 + t * t))  # 0.074180
    assert s.p_t == pytest.approx(0.0741799, abs=1e-6)
    assert s.ci_low == pytest.approx(2 - t_crit / math.sqrt(3))
    assert s.ci_high == pytest.approx(2 + t_crit / math.sqrt(3))
    # Sign flips of [1, 2, 3]: sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice in 8.
    assert s.p_sign_flip == 0.25


def test_sign_flip_counts_by_hand():
    assert sign_flip_p_value([1.0, -2.0, 3.0]) == 0.75  # |sum| = 2: 6 of the 8 are >= 2
    assert sign_flip_p_value([1.0, 1.0]) == 0.5  # sums 2, 0, 0, -2
    assert sign_flip_p_value(np.arange(1.0, 9.0)) == 2 / 256  # K = 8, all one sign: the minimum
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floats, not 0: every pattern must still count as a tie.
    assert sign_flip_p_value([0.1, 0.2, -0.3]) == 1.0


def test_t_test_agrees_with_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6) + 0.5
    t, p = paired_t_test(b - a)
    ref = scipy.stats.ttest_rel(b, a)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_identical_arms_have_zero_difference_and_no_significance():
    s = paired_stats([0.5, 0.7, 0.9, 0.8], [0.5, 0.7, 0.9, 0.8])
    assert (s.diff_mean, s.diff_std, s.ci_low, s.ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert s.t is None and s.p_t == 1.0 and s.p_sign_flip == 1.0


def test_a_constant_nonzero_difference():
    s = paired_stats([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0])
    assert s.t == math.inf and s.p_t == 0.0 and s.p_sign_flip == 2 / 16
    assert s.ci_low == s.ci_high == 1.0


@pytest.mark.parametrize("a,b", [([1.0], [2.0]), ([1.0, 2.0], [1.0]), ([[1.0, 2.0]], [[1.0, 2.0]])])
def test_paired_stats_refuses_bad_shapes(a, b):
    with pytest.raises(ValueError, match="equal length >= 2"):
        paired_stats(a, b)


# --- the arms --------------------------------------------------------------------------------


def _config(**overrides):
    c = get_config()
    c.model = model_config("mlp", features=(16,))
    c.total_steps, c.eval_every = 20, 10
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def test_arm_b_from_overrides():
    b = arm_b_config(_config(), b=["optimizer.learning_rate=1e-5", "config.model.features=(8, 8)"])
    assert b.optimizer.learning_rate == 1e-5 and tuple(b.model.features) == (8, 8)
    assert parse_arm_overrides(["seed=3", "data.augment_flip=true"]) == {
        "seed": 3,
        "data.augment_flip": True,
    }


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "arm B is missing: give --config_b FILE or --b"),
        ({"b": ["seed=1"], "config_b_file": "x.py"}, "not both"),
        ({"b": ["optimizer.learnin_rate=1"]}, "--b: config.optimizer.learnin_rate: no such field"),
        ({"b": ["model.widht=3"]}, "--b: config.model.widht: no such field"),
        ({"b": ["learning_rate"]}, "expected FIELD=VALUE"),
        ({"b": ["seed=1", "seed=2"]}, "config.seed is given twice"),
        ({"b": ["total_steps=many"]}, "--b: config.total_steps='many'"),
        ({"config_b_file": "/no/such/file.py"}, "/no/such/file.py: no such file"),
    ],
)
def test_bad_arm_b_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        arm_b_config(_config(), **kwargs)


@pytest.mark.parametrize(
    "field,value",
    [("total_steps", 30), ("eval_every", 5), ("seed", 1), ("data.validation_size", 100)],
)
def test_arms_with_other_steps_or_eval_data_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"config.{field} is .* in A but .* in B"):
        check_comparable(_config(), _config(**{field: value}))


def test_eval_subsets_must_match():
    check_comparable(_config(eval_batch_size=100), _config(eval_batch_size=200))  # whole splits
    with pytest.raises(ConfigError, match="config.eval_batch_size"):
        check_comparable(
            _config(eval_steps=2, eval_batch_size=100), _config(eval_steps=2, eval_batch_size=200)
        )


def test_pairing_says_what_seed_k_shares():
    a = _config()
    assert pairing(a, _config(**{"optimizer.learning_rate": 1e-5})) == {
        "same_data_order": True,
        "data_differs_in": [],
        "same_init": True,
        "init_differs_in": [],
    }
    other_batch = pairing(a, _config(batch_size=64))
    assert not other_batch["same_data_order"] and other_batch["data_differs_in"] == ["batch_size"]
    assert other_batch["same_init"]
    wider = pairing(a, _config(**{"model.features": (32,)}))
    assert wider["same_data_order"] and wider["init_differs_in"] == ["model.features"]


@pytest.mark.parametrize("seeds", [1, 0, 25])
def test_seeds_out_of_range_are_refused_before_training(tmp_path, seeds):
    with pytest.raises(ConfigError, match=r"--seeds must be in \[2, 24\]"):
        run_compare(Arm("A", _config()), Arm("B", _config()), str(tmp_path / "c"), seeds=seeds)
    assert not (tmp_path / "c").exists()


def test_num_seeds_set_elsewhere_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="arm B: config.num_seeds=3"):
        run_compare(Arm("A", _config()), Arm("B", _config(num_seeds=3)), str(tmp_path), seeds=4)


def test_a_bad_arm_names_the_arm(tmp_path):
    bad = _config(**{"optimizer.name": "adamm"})
    with pytest.raises(ConfigError, match="arm B: config.optimizer.name: 'adamm'"):
        run_compare(Arm("A", _config()), Arm("B", bad), str(tmp_path), seeds=2)


def test_another_comparison_in_the_same_directory_is_refused(tmp_path):
    _check_same_compare(str(tmp_path), {"seeds": 4, "a": {"x": (1, 2)}, "b": {"x": [1]}})
    _check_same_compare(str(tmp_path), {"seeds": 4, "a": {"x": (1, 2)}, "b": {"x": [1]}})
    with pytest.raises(ConfigError, match="holds another comparison \\(different seeds, b\\)"):
        _check_same_compare(str(tmp_path), {"seeds": 8, "a": {"x": [1, 2]}, "b": {"x": [2]}})


# --- reading the arms ------------------------------------------------------------------------


def _write_arm(path, final: dict, records: list[dict]):
    path.mkdir(parents=True)
    (path / "final_metrics.json").write_text(json.dumps(final))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _seeded(prefix: str, values: list[float], seeds=(0, 1, 2)) -> dict:
    return {f"{prefix}/seed_{s}": v for s, v in zip(seeds, values, strict=True)}


def test_analyze_pairs_final_metrics_and_matched_steps(tmp_path):
    a_final = {**_seeded("test/accuracy", [0.5, 0.6, 0.7]), "test/accuracy": 0.6}
    b_final = _seeded("test/accuracy", [0.6, 0.8, 1.0])
    a_rec = [{"step": 5, **_seeded("validation/loss", [1.0, 2.0, 3.0])},
             {"step": 10, **_seeded("validation/loss", [1.0, 1.0, 1.0])}]  # fmt: skip
    b_rec = [{"step": 5, **_seeded("validation/loss", [1.0, 2.0, "nan"])},
             {"step": 7, **_seeded("validation/loss", [0.0, 0.0, 0.0])}]  # fmt: skip
    _write_arm(tmp_path / "a", a_final, a_rec)
    _write_arm(tmp_path / "b", b_final, b_rec)
    report = analyze(str(tmp_path), [0, 1, 2], ["A", "B"], pairing(_config(), _config()))
    final = report["final"]["test/accuracy"]
    assert final["a"] == [0.5, 0.6, 0.7] and final["b"] == [0.6, 0.8, 1.0]
    assert final["diff_mean"] == pytest.approx(0.2) and final["p_sign_flip"] == 0.25
    assert list(report["steps"]) == ["validation/loss"]
    assert list(report["steps"]["validation/loss"]) == ["5"]  # the only step both arms have
    assert math.isnan(report["steps"]["validation/loss"]["5"]["diff_mean"])
    assert report["unmatched_steps"] == {"a": [10], "b": [7]}
    text = format_report(report)
    assert "| test/accuracy | 0.6000 ± 0.1000 | 0.8000 ± 0.2000 | 0.2000 |" in text
    assert "| 5 |" in text and "Evaluations of one arm only (not compared): A [10], B [7]" in text


def test_arms_reporting_other_metrics_are_refused(tmp_path):
    _write_arm(tmp_path / "a", _seeded("test/accuracy", [0.5, 0.6, 0.7]), [])
    _write_arm(tmp_path / "b", _seeded("test/loss", [0.5, 0.6, 0.7]), [])
    with pytest.raises(DataError, match="only A: \\['test/accuracy'\\], only B: \\['test/loss'\\]"):
        analyze(str(tmp_path), [0, 1, 2], ["A", "B"], pairing(_config(), _config()))


def test_per_seed_needs_every_seed():
    record = {**_seeded("validation/loss", [1.0, 2.0], seeds=(3, 4)), "validation/loss": 1.5,
              "validation/accuracy/seed_3": 0.5, "train/loss/seed_3": 9.0}  # fmt: skip
    assert per_seed(record, [3, 4]) == {"validation/loss": [1.0, 2.0]}
