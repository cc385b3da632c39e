"""The comparison behind `jaxtrain diverge` (jaxtrain/tools/diverge.py) and its bad input, on run
directories written by hand: config.json, provenance.json and fingerprints.jsonl records whose
fingerprints are chosen, so every outcome is known in advance."""

import json
import math

import pytest

from jaxtrain.errors import CheckpointError, DataError
from jaxtrain.fingerprint_records import FILENAME
from jaxtrain.tools.diverge import FLOAT_LEVEL, diverge, format_report, report_json

# [sum, sumsq, p0, p1, p2, p3, checksum, size]: a leaf of norm 10.
LEAF = [1.0, 100.0, 3.0, -2.0, 5.0, 1.0, 12345, 50]


def _leaf(shift: float = 0.0, checksum: int = 12345, size: int = 50) -> list:
    """LEAF with every projection moved by `shift` (so ||a - b|| is estimated as |shift|)."""
    return [*LEAF[:2], *(p + shift for p in LEAF[2:6]), checksum, size]


def _record(step: int, **changes) -> dict:
    leaves = {
        "step": [float(step), float(step * step), 0.0, 0.0, 0.0, 0.0, step, 1],
        "grads/w": _leaf(),
        "params/w": _leaf(),
        "opt_state/mu/w": _leaf(),
    }
    leaves.update(changes)
    return {"step": step, "leaves": leaves}


def _run(path, records, *, every=1, provenance=None, config=None):
    path.mkdir()
    cfg = {"seed": 0, "fingerprint_every": every, "model": {"name": "mlp"}} | (config or {})
    (path / "config.json").write_text(json.dumps(cfg))
    prov = {"packages": {"jax": "0.10.2"}, "mesh_shape": {"data": 1}, "command": [str(path)]}
    (path / "provenance.json").write_text(json.dumps(prov | (provenance or {})))
    (path / FILENAME).write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_identical_through_the_last_common_step(tmp_path):
    a = _run(tmp_path / "a", [_record(s) for s in range(3)])
    b = _run(tmp_path / "b", [_record(s) for s in range(3)])
    d = diverge(a, b)
    assert d.verdict == "identical" and d.first is None and d.common == [0, 1, 2]
    assert d.provenance_diffs == []  # the command line always differs; it is ignored
    assert format_report(d).endswith("identical through step 2 (3 steps compared bitwise)")
    assert report_json(d)["first_step"] is None


def test_names_the_first_step_the_earliest_category_and_its_size(tmp_path):
    changed = {"grads/w": _leaf(0.5, checksum=1), "params/w": _leaf(0.2, checksum=2)}
    a = _run(tmp_path / "a", [_record(s) for s in range(4)])
    b = _run(
        tmp_path / "b",
        [_record(0), _record(1), _record(2, **changed), _record(3, **changed)],
        config={"seed": 1},
        provenance={"packages": {"jax": "0.11.0"}},
    )
    d = diverge(a, b)
    assert d.verdict == "differ" and d.first.step == 2
    assert d.first.categories() == ["grads", "params"]  # causal order, opt_state identical
    assert d.first.category_rel("grads") == pytest.approx(0.05)  # 0.5 / norm 10
    assert d.first_by_category == {"grads": 2, "params": 2}
    assert d.config_diffs == [("seed", 0, 1)]
    assert d.provenance_diffs == [("packages.jax", "0.10.2", "0.11.0")]
    text = format_report(d)
    assert "first difference at step 2; identical through step 1" in text
    assert "packages.jax: '0.10.2' vs '0.11.0'" in text
    assert text.endswith("the runs differ from step 2 (grads differs by ~0.05)")


def test_a_tiny_first_difference_is_float_level(tmp_path):
    tiny = 10 * FLOAT_LEVEL / 2
    a = _run(tmp_path / "a", [_record(s) for s in range(3)])
    later = {"grads/w": _leaf(1.0, checksum=9), "params/w": _leaf(3.0, checksum=8)}
    b = _run(
        tmp_path / "b",
        [_record(0), _record(1, **{"grads/w": _leaf(tiny, checksum=7)}), _record(2, **later)],
    )
    d = diverge(a, b)
    assert d.verdict == "float-level" and d.first.step == 1
    assert d.last.category_rel("params") == pytest.approx(0.3)  # grown since; still named
    assert "float-level differences from step 1 (grads differs by ~5e-05" in format_report(d)


def test_bits_that_differ_with_equal_moments_still_differ(tmp_path):
    a = _run(tmp_path / "a", [_record(0)])
    b = _run(tmp_path / "b", [_record(0, **{"params/w": _leaf(checksum=1)})])
    d = diverge(a, b)
    assert d.first.step == 0 and d.first.leaves[0].rel == 0.0 and d.verdict == "float-level"


def test_different_structure_is_named(tmp_path):
    a = _run(tmp_path / "a", [_record(0, **{"params/v": _leaf()})])
    b = _run(tmp_path / "b", [_record(0, **{"params/w": _leaf(size=60)})])
    d = diverge(a, b)
    notes = {x.name: x.note for x in d.first.leaves}
    assert notes == {"params/v": "only in RUN_A", "params/w": "size 50 vs 60"}
    assert d.verdict == "differ" and math.isinf(d.first.category_rel("params"))
    assert "the runs differ from step 0 (params/w: size 50 vs 60)" in format_report(d)


def test_different_fingerprint_every_compares_the_common_steps(tmp_path):
    a = _run(tmp_path / "a", [_record(s) for s in range(0, 7, 2)], every=2)
    b = _run(tmp_path / "b", [_record(s) for s in range(0, 10, 3)], every=3)
    d = diverge(a, b)
    assert d.common == [0, 6] and d.verdict == "identical"
    text = format_report(d)
    assert "RUN_B " + b + ": steps 0..9, 4 records (fingerprint_every=3)" in text
    assert "compared the 2 steps fingerprinted in both runs" in text
    c = _run(tmp_path / "c", [_record(s) for s in (1, 5)], every=4)
    with pytest.raises(DataError, match="no step is fingerprinted in both runs: RUN_A has steps"):
        diverge(a, c)


def test_bad_runs_are_named(tmp_path):
    good = _run(tmp_path / "good", [_record(0)])
    with pytest.raises(DataError, match=f"RUN_A {tmp_path}/nothing: no such directory"):
        diverge(str(tmp_path / "nothing"), good)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="RUN_B .*/empty is not a jaxtrain run .no config.json"):
        diverge(good, str(tmp_path / "empty"))
    off = _run(tmp_path / "off", [], every=0)
    (tmp_path / "off" / FILENAME).unlink()
    with pytest.raises(DataError, match="has no fingerprints .* fingerprint_every=0"):
        diverge(good, off)
    garbled = _run(tmp_path / "garbled", [_record(0), _record(1)])
    text = (tmp_path / "garbled" / FILENAME).read_text().splitlines()
    (tmp_path / "garbled" / FILENAME).write_text(f"{{oops\n{text[1]}\n")
    with pytest.raises(CheckpointError, match=f"{garbled}/{FILENAME} line 1 is not a"):
        diverge(good, garbled)
    (tmp_path / "garbled" / FILENAME).write_text('{"step": 0, "leaves": 3}\n')
    with pytest.raises(DataError, match="the step-0 record has no leaves"):
        diverge(good, garbled)
    (tmp_path / "garbled" / "config.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="config.json: the run's config is not a JSON object"):
        diverge(good, garbled)
