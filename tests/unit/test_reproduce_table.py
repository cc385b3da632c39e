"""Experiments that check themselves: EXPECTED declarations, the run records and README's
generated results table (no training here; tests/e2e/test_reproduce.py reruns one)."""

import json
import os

import pytest

from jaxtrain.errors import ConfigError, DataError
from jaxtrain.expected import Expected
from jaxtrain.tools.reproduce import (
    TABLE_BEGIN,
    TABLE_END,
    load_declared,
    read_records,
    read_table,
    results_table,
    write_table,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD = dict(metric="test/accuracy", value=0.9, tolerance=0.01, hardware="2 CPU cores")


def test_readme_results_table_is_generated_from_the_declarations_and_records():
    """After `reproduce`, regenerate: python -m jaxtrain reproduce --table --out README.md"""
    generated = results_table(os.path.join(REPO, "experiments"))
    assert read_table(os.path.join(REPO, "README.md")) == generated
    files = os.listdir(os.path.join(REPO, "experiments"))
    names = sorted(f.removesuffix(".py") for f in files if f.endswith(".py"))
    assert [line.split("`")[1] for line in generated.splitlines()[2:]] == names


@pytest.mark.parametrize("missing", ["metric", "value", "tolerance", "hardware"])
def test_a_declaration_without_a_required_field_is_an_error(missing):
    fields = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigError, match=f"{missing} is required"):
        Expected(**fields)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("metric", "test/acc", "metric must be SPLIT/NAME"),
        ("metric", "train/loss", "metric must be SPLIT/NAME"),
        ("value", float("nan"), "value must be a finite number"),
        ("tolerance", -0.1, "tolerance must be a finite number >= 0"),
        ("check", "about", "check 'about' is not one of near, at_most, at_least"),
    ],
)
def test_a_malformed_declaration_is_an_error(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Expected(**{**GOOD, field: value})


def test_checks():
    near = Expected(**GOOD)
    assert near.passes(0.9) and near.passes(0.905) and not near.passes(0.92)
    assert not near.passes(float("nan")) and near.describe() == "0.9 ± 0.01"
    at_most = Expected(**{**GOOD, "metric": "validation/loss", "value": 1.6, "tolerance": 0.0,
                          "check": "at_most"})  # fmt: skip
    assert at_most.passes(1.2) and at_most.passes(1.6) and not at_most.passes(1.61)
    assert at_most.describe() == "<= 1.6"
    at_least = Expected(**{**GOOD, "check": "at_least", "tolerance": 0.05})
    assert at_least.passes(0.99) and at_least.passes(0.85) and not at_least.passes(0.84)
    assert at_least.describe() == ">= 0.9 (- 0.05)"


def _experiment(tmp_path, name: str, declaration: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(
        "from jaxtrain.config import get_config as base\n"
        "from jaxtrain.expected import Expected\n\n"
        f"{declaration}\n\n"
        "def get_config():\n    return base()\n"
    )
    return str(path)


def test_an_experiment_without_expected_is_refused(tmp_path):
    path = _experiment(tmp_path, "plain", "")
    with pytest.raises(ConfigError, match=f"{path}: EXPECTED must be a .*got nothing"):
        load_declared(path)
    with pytest.raises(ConfigError, match="plain.py: EXPECTED must be"):
        results_table(str(tmp_path))


def test_the_table_shows_the_latest_run_and_whether_it_meets_the_declaration(tmp_path):
    decl = 'EXPECTED = Expected(metric="test/accuracy", value=0.9, tolerance=0.01, hardware="h")'
    _experiment(tmp_path, "exp", decl)
    _experiment(tmp_path, "new", decl)
    rows = [
        {"experiment": "exp", "metric": "test/accuracy", "value": 0.9, "date": "2026-01-01"},
        {"experiment": "exp", "metric": "test/loss", "value": 0.1},  # another metric: ignored
        {"experiment": "exp", "metric": "test/accuracy", "value": 0.85, "date": "2026-02-01",
         "commit": "abc1234", "machine": "2 CPU cores (x86_64)", "load_avg_1min": 3.25,
         "train_seconds": 12.34, "steps": 20, "seeds": 2, "how": "reproduce"},
    ]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = results_table(str(tmp_path)).splitlines()
    assert lines[2] == (
        "| `exp` | test accuracy | 0.9 ± 0.01 | h | 0.85 (mean of 2 seeds) | **no** | 2 CPU cores "
        "(x86_64), load average 3.2 | 12.3 s, 20 steps | 2026-02-01, commit abc1234 (reproduce; "
        "1 earlier in results.jsonl) |"
    )
    assert lines[3] == "| `new` | test accuracy | 0.9 ± 0.01 | h | - | not yet run | - | - | - |"


def test_a_damaged_record_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"experiment": "x", "metric": "test/loss", "value": 1}\n{"experiment": 1}\n')
    with pytest.raises(DataError, match=f"{path} line 2 is not a run record"):
        read_records(str(path))


def test_write_table_replaces_only_the_marked_region(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{TABLE_BEGIN}\n| old |\n{TABLE_END}\n\nrest\n")
    write_table(str(readme), "| new |\n")
    assert readme.read_text() == f"# Title\n\n{TABLE_BEGIN}\n| new |\n{TABLE_END}\n\nrest\n"
    assert read_table(str(readme)) == "| new |\n"
    (tmp_path / "other.md").write_text("no markers\n")
    with pytest.raises(DataError, match="other.md: no <!-- results:begin"):
        write_table(str(tmp_path / "other.md"), "| new |\n")
