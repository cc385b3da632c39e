"""Bad input, as a new user gives it, through the real command line (`python -m jaxtrain ...`,
run by conftest.ForkedCLI).

Every case of CASES must end with exit code 2 and exactly one `error: ...` line (the last line of
stderr) that names the file, field or flag; stdout stays empty, no traceback appears, and the
files of a prepared run (checkpoints, metrics, config) are byte for byte what they were. The
other lines stderr may hold are listed in NOISE. The interrupted-run tests at the end resume a
run left by a kill and check that it ends as the uninterrupted run did.

Add a case here with every feature that reads a file, a flag or a config field.
"""

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from jaxtrain.writers import read_metrics

REPO = str(Path(__file__).resolve().parents[2])
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
CONFIG = ["--config", "experiments/fashion_mnist_mlp.py"]
# 20 steps of a small MLP, two checkpoints (10 and 20), one batch per evaluation, batches read
# from disk (decoding the whole train split into memory would take longer than training).
TINY = [
    *CONFIG,
    "--config.total_steps=20",
    "--config.log_every=10",
    "--config.eval_every=10",
    "--config.checkpoint.every=10",
    "--config.eval_steps=1",
    "--config.optimizer.warmup_steps=0",
    "--config.model.features=(32,)",
    "--config.data.in_memory=false",
    "--noprogress",
]
# What stderr may hold besides the one error line: jaxtrain's warnings, other libraries'
# absl-format warnings (tfds on an unprepared data dir), absl's note when ml_collections warns
# before logging is set up, and train's header line.
NOISE = re.compile(
    r"warning: |W\d{4} \d\d:\d\d:\d\d\.\d+ |WARNING: Logging before flag parsing goes to stderr"
    r"|workdir \S+; mesh \{"
)


def _digests(run: Path) -> dict[str, str]:
    """Every file of the run by path, with checkpoints set aside mapped back to their step
    (checkpoints_damaged/20-1733000000/x is checkpoints/20/x), so a move is not a change."""
    out = {}
    for path in sorted(run.rglob("*")):
        if path.is_file():
            rel = re.sub(
                r"^checkpoints_damaged/(\d+)-\d+/", r"checkpoints/\1/", str(path.relative_to(run))
            )
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- setups: (run, tmp) -> None, applied to a fresh copy of the prepared run -----------------


def _write(name: str, text: str) -> Callable[[Path, Path], None]:
    return lambda run, tmp: (tmp / name).write_text(text)


def _damage(*steps: int) -> Callable[[Path, Path], None]:
    """Truncates every array file of these steps to a third, as a failing disk might."""

    def damage(run: Path, tmp: Path) -> None:
        for step in steps:
            for path in (run / "checkpoints" / str(step) / "state").rglob("*"):
                if path.is_file():
                    os.truncate(path, path.stat().st_size // 3)

    return damage


def _damaged_earlier(run: Path, tmp: Path) -> None:
    """An earlier attempt already moved every step aside (the state after the error above)."""
    (run / "checkpoints_damaged").mkdir()
    for step in ("10", "20"):
        (run / "checkpoints" / step).rename(run / "checkpoints_damaged" / f"{step}-1733000000")


def _garble_metrics_line_2(run: Path, tmp: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "{this is not json}\n"
    (run / "metrics.jsonl").write_text("".join(lines))


def _remove(*parts: str) -> Callable[[Path, Path], None]:
    return lambda run, tmp: shutil.rmtree(run.joinpath(*parts))


def _remove_drift_reference(run: Path, tmp: Path) -> None:
    (run / "drift_reference.json").unlink()


def _empty_checkpoints(run: Path, tmp: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {run}: a copy of the prepared run; {tmp}: an empty scratch folder
    message: str  # a fragment of the error line
    setup: Callable[[Path, Path], None] | None = None
    code: int = 2


SYNTAX_ERROR = "def get_config(:\n    pass\n"
RAISES = "def get_config():\n    return undefined_name\n"
RETURNS_NONE = "def get_config():\n    pass\n"
MISSPELLED = (
    "from experiments.fashion_mnist_mlp import get_config as base\n\n"
    "def get_config():\n    c = base()\n    c.total_stepz = 3\n    return c\n"
)
TRAIN = ("train", *TINY, "--workdir", "{run}")
# A fresh workdir: the prepared run's checkpoints would refuse LoRA's config first.
LORA = ("train", *TINY, "--workdir", "{tmp}/lora", "--config.finetune.lora_rank=4",
        "--config.finetune.lora_targets=('dense/*/kernel',)")  # fmt: skip
COMPARE = ("compare", *CONFIG, "--workdir", "{tmp}/c")
NO_TOLERANCE = (
    "from experiments.fashion_mnist_mlp import get_config\n"
    "from jaxtrain.expected import Expected\n\n"
    "EXPECTED = Expected(metric='test/accuracy', value=0.9, hardware='2 CPU cores')\n"
)

CASES = [
    # --- config files ---
    Case("config_missing", ("train", "--config", "{tmp}/nope.py", "--workdir", "{run}"),
         "--config {tmp}/nope.py: no such file"),
    Case("config_is_a_folder", ("train", "--config", "{tmp}", "--workdir", "{run}"),
         "--config {tmp}: is a directory"),
    Case("config_syntax_error", ("train", "--config", "{tmp}/c.py", "--workdir", "{run}"),
         "--config {tmp}/c.py line 1: SyntaxError: invalid syntax", _write("c.py", SYNTAX_ERROR)),
    Case("config_without_get_config", ("train", "--config", "{tmp}/c.py", "--workdir", "{run}"),
         "--config {tmp}/c.py: defines no get_config()", _write("c.py", "x = 1\n")),
    Case("config_raises", ("train", "--config", "{tmp}/c.py", "--workdir", "{run}"),
         "--config {tmp}/c.py line 2: NameError: name 'undefined_name' is not defined",
         _write("c.py", RAISES)),
    Case("config_returns_none", ("train", "--config", "{tmp}/c.py", "--workdir", "{run}"),
         "--config {tmp}/c.py: get_config() returned NoneType", _write("c.py", RETURNS_NONE)),
    Case("config_misspelled_field", ("train", "--config", "{tmp}/c.py", "--workdir", "{run}"),
         "config.total_stepz: is not a field of the base config (jaxtrain/config.py); did you "
         "mean total_steps?", _write("c.py", MISSPELLED)),
    # --- config overrides ---
    Case("override_unknown_field", (*TRAIN, "--config.total_stepz=3"), "total_stepz"),
    Case("override_wrong_type", (*TRAIN, "--config.total_steps=many"), "--config.total_steps"),
    Case("override_bad_value", (*TRAIN, "--config.total_steps=0"),
         "config.total_steps: must be > 0, got 0"),
    Case("override_unknown_choice", (*TRAIN, "--config.optimizer.name=adamm"),
         "config.optimizer.name: 'adamm' is not one of"),
    Case("grad_accum_not_auto", (*TRAIN, "--config.optimizer.grad_accum_steps=autox"),
         "config.optimizer.grad_accum_steps: must be a whole number >= 1 or 'auto', got 'autox'"),
    Case("unknown_dataset", (*TRAIN, "--config.data.name=cifar10"), "config.data.name"),
    Case("dataset_not_prepared", (*TRAIN, "--config.data.data_dir={tmp}"),
         "Dataset 'fashion_mnist' is not prepared"),
    Case("num_classes_mismatch", (*TRAIN, "--config.model.num_classes=5"),
         "config.model.num_classes: 5 but dataset 'fashion_mnist' has 10 classes"),
    Case("negative_fingerprint_every", (*TRAIN, "--config.fingerprint_every=-1"),
         "config.fingerprint_every: must be >= 0 (0: off)"),
    Case("lora_targets_match_nothing", (*LORA, "--config.finetune.lora_targets=('nope/*',)"),
         "config.finetune.lora_targets: pattern 'nope/*' matches no param of this model; the "
         "model's weight matrices are: dense/*/kernel, head/kernel"),
    Case("lora_rank_negative", (*TRAIN, "--config.finetune.lora_rank=-1"),
         "config.finetune.lora_rank: must be >= 0 (0: off), got -1"),
    Case("lora_rank_too_large", (*LORA, "--config.finetune.lora_rank=64"),
         "config.finetune.lora_rank: 64 is larger than min(in, out) = 32 of dense/0/kernel"),
    Case("lora_with_ema", (*LORA, "--config.optimizer.ema_decay=0.9"),
         "config.optimizer.ema_decay: is not supported with LoRA"),
    # --- checkpoints and the run directory ---
    Case("resume_with_other_model", (*TRAIN, "--config.model.features=(64,)"),
         "incompatible config (model.features"),
    Case("every_checkpoint_damaged", TRAIN,
         "damaged step(s) 10, 20 are in {run}/checkpoints_damaged. Nothing was trained or "
         "written. To train from step 0 on purpose, re-run with "
         "--config.checkpoint.allow_fresh_start=true", _damage(10, 20)),
    Case("every_checkpoint_damaged_rerun", TRAIN, "damaged step(s) 10, 20", _damaged_earlier),
    Case("metrics_line_garbled", TRAIN, "{run}/metrics.jsonl line 2 is not a metrics record",
         _garble_metrics_line_2),
    Case("workdir_is_a_file", ("train", *TINY, "--workdir", "{run}/config.json/run"),
         "is not writable"),
    # --- eval, export, sample on a run ---
    Case("eval_no_such_run", ("eval", "--workdir", "{tmp}/nothing"),
         "{tmp}/nothing/config.json: cannot read the run's config"),
    Case("eval_no_checkpoints_folder", ("eval", "--workdir", "{run}"),
         "no checkpoints in {run}/checkpoints", _remove("checkpoints")),
    Case("eval_no_checkpoints", ("eval", "--workdir", "{run}"),
         "no checkpoints in {run}/checkpoints", _empty_checkpoints),
    Case("eval_unknown_step", ("eval", "--workdir", "{run}", "--checkpoint", "7"),
         "--checkpoint='7': use best, latest or one of the saved steps [10, 20]"),
    Case("eval_damaged_checkpoint", ("eval", "--workdir", "{run}"),
         "checkpoint step 20 in {run}/checkpoints cannot be read, it may be damaged", _damage(20)),
    Case("export_unwritable_out", ("export", "--workdir", "{run}", "--out", "{tmp}/no/dir/m.x"),
         "--out {tmp}/no/dir/m.x: cannot write"),
    Case("export_unknown_format",
         ("export", "--workdir", "{run}", "--out", "{tmp}/m", "--format", "onnx"),
         "--format='onnx': use one of jax_export, hf"),
    Case("export_hf_an_image_run",
         ("export", "--workdir", "{run}", "--out", "{tmp}/hf", "--format", "hf"),
         "--format hf: the run trained a 'mlp' (config.model.name); HF export exists for gpt, "
         "llama, bert"),
    Case("export_hf_int8", ("export", "--workdir", "{run}", "--out", "{tmp}/hf", "--format",
                            "hf", "--int8"), "--int8 is for --format jax_export"),
    Case("sample_an_mlp_run", ("sample", "--workdir", "{run}", "--prompt", "hi"),
         "trained a 'mlp'; sampling needs a gpt or llama run"),
    Case("sample_negative_temperature",
         ("sample", "--workdir", "{run}", "--prompt", "hi", "--temperature=-1"),
         "temperature must be finite and >= 0 (0 = greedy), got -1.0"),
    Case("sample_negative_top_k", ("sample", "--workdir", "{run}", "--prompt", "hi", "--top_k=-1"),
         "top_k must be >= 0"),
    Case("sample_empty_prompt", ("sample", "--workdir", "{run}", "--prompt", ""),
         "--prompt is required"),
    Case("sample_not_a_number", ("sample", "--workdir", "{run}", "--prompt", "a", "--top_k=x"),
         "--top_k"),
    Case("drift_no_reference", ("drift", "--workdir", "{run}", "--data", "fashion_mnist"),
         "{run}/drift_reference.json: no drift reference", _remove_drift_reference),
    Case("drift_text_against_an_image_run", ("drift", "--workdir", "{run}", "--data",
         "mr_polarity"), "--data mr_polarity is text_classification, but the run in {run} "
         "trained on fashion_mnist (image_classification)"),
    Case("drift_bad_split", ("drift", "--workdir", "{run}", "--data", "fashion_mnist:tset"),
         "split must be one of train, validation, test, got 'tset'"),
    Case("drift_bad_transform", ("drift", "--workdir", "{run}", "--data", "fashion_mnist",
         "--transform", "rotate:45"), "--transform 'rotate:45': use brightness:DELTA"),
    # --- tokenizer, prepare, plot, estimate, bench, sweep ---
    Case("tokenizer_vocab_size_0", ("tokenizer", "train", "--kind", "bpe", "--corpus",
         "shakespeare", "--vocab_size", "0", "--out", "{tmp}/t.json"),
         "vocab_size 0 is too small for a bpe tokenizer"),
    Case("tokenizer_unknown_kind", ("tokenizer", "train", "--kind", "sentencepiece", "--corpus",
         "shakespeare", "--out", "{tmp}/t.json"), "--kind='sentencepiece'"),
    Case("tokenizer_missing_corpus", ("tokenizer", "train", "--kind", "char", "--corpus",
         "{tmp}/none.txt", "--out", "{tmp}/t.json"), "is neither a text dataset"),
    Case("tokenizer_empty_corpus", ("tokenizer", "train", "--kind", "char", "--corpus",
         "{tmp}/e.txt", "--out", "{tmp}/t.json"), "no non-empty documents", _write("e.txt", "")),
    Case("tokenizer_unwritable_out", ("tokenizer", "train", "--kind", "char", "--corpus",
         "{tmp}/c.txt", "--out", "{tmp}/c.txt/t.json"), "--out {tmp}/c.txt/t.json: cannot write",
         _write("c.txt", "some text\n")),
    Case("prepare_unknown_dataset", ("prepare", "cifar10"), "prepare takes one name"),
    Case("prepare_missing_csv", ("prepare", "user_text", "--name", "x", "--file", "{tmp}/no.csv",
         "--data_dir", "{tmp}"), "{tmp}/no.csv: cannot read"),
    Case("prepare_csv_without_text_column", ("prepare", "user_text", "--name", "x", "--file",
         "{tmp}/d.csv", "--data_dir", "{tmp}"), "{tmp}/d.csv: no column 'text'",
         _write("d.csv", "a,b\n1,2\n")),
    Case("prepare_missing_image_folder", ("prepare", "user_images", "--name", "x", "--folder",
         "{tmp}/none", "--data_dir", "{tmp}"), "{tmp}/none: not a directory"),
    Case("plot_not_a_run", ("plot", "{tmp}"), "{tmp}: no metrics.jsonl here"),
    Case("plot_garbled_metrics", ("plot", "{run}", "--out", "{tmp}/p.png"),
         "{run}/metrics.jsonl line 2 is not a metrics record", _garble_metrics_line_2),
    Case("estimate_unknown_hardware", ("estimate", *CONFIG, "--hardware", "h900",
         "--price_per_hour", "1"), "--hardware 'h900' is unknown"),
    Case("estimate_zero_mfu", ("estimate", *CONFIG, "--hardware", "h100", "--price_per_hour", "1",
         "--mfu", "0"), "--mfu must be in (0, 1]"),
    Case("bench_zero_steps", ("bench", *CONFIG, "--steps", "0"), "--steps and --warmup must be"),
    Case("sweep_bad_grid", ("sweep", *CONFIG, "--workdir", "{tmp}/s", "--grid", "lr"),
         "sweep flag 'lr': expected PATH=SPEC"),
    Case("sweep_random_without_trials", ("sweep", *CONFIG, "--workdir", "{tmp}/s", "--random",
         "optimizer.learning_rate=loguniform:1e-4:1e-2"), "a random sweep needs --trials N"),
    # --- compare, reproduce ---
    Case("compare_one_seed", (*COMPARE, "--b", "optimizer.learning_rate=1e-5", "--seeds", "1"),
         "--seeds must be in [2, 24] (a paired test needs at least 2 seeds"),
    Case("compare_without_seeds", ("compare", *CONFIG, "--workdir", "{tmp}/c", "--b", "seed=1"),
         "--seeds is required"),
    Case("compare_both_forms_of_arm_b", (*COMPARE, "--seeds", "2", "--b", "seed=1",
         "--config_b", "experiments/fashion_mnist_cnn.py"), "--config_b FILE or as --b"),
    Case("compare_no_arm_b", (*COMPARE, "--seeds", "2"), "arm B is missing"),
    Case("compare_unknown_field", (*COMPARE, "--seeds", "2", "--b", "optimizer.learnin_rate=1"),
         "--b: config.optimizer.learnin_rate: no such field"),
    Case("compare_other_steps", (*COMPARE, "--seeds", "2", "--b", "total_steps=40"),
         "config.total_steps is 3000 in A but 40 in B"),
    Case("compare_config_b_missing", (*COMPARE, "--seeds", "2", "--config_b", "{tmp}/nope.py"),
         "--config_b {tmp}/nope.py: no such file"),
    Case("reproduce_without_tolerance", ("reproduce", "{tmp}/e.py", "--workdir", "{tmp}/r"),
         "{tmp}/e.py line 4: ConfigError: Expected(metric='test/accuracy'): tolerance is required",
         _write("e.py", NO_TOLERANCE)),
    Case("reproduce_without_expected", ("reproduce", "{tmp}/e.py", "--workdir", "{tmp}/r"),
         "{tmp}/e.py: EXPECTED must be a jaxtrain.expected.Expected", _write("e.py", MISSPELLED)),
    Case("reproduce_missing_file", ("reproduce", "{tmp}/nope.py"), "{tmp}/nope.py: no such file"),
    # --- diverge ---
    Case("diverge_not_a_run", ("diverge", "{tmp}", "{run}"),
         "RUN_A {tmp} is not a jaxtrain run (no config.json)"),
    Case("diverge_no_fingerprints", ("diverge", "{run}", "{run}"),
         "RUN_A {run} has no fingerprints (fingerprints.jsonl; it trained with "
         "fingerprint_every=0)"),
    Case("diverge_one_run", ("diverge", "{run}"), "diverge takes two run directories, got 1"),
    # --- the command line itself ---
    Case("unknown_command", ("trian",), "unknown command 'trian' (did you mean train?)"),
    Case("flag_of_another_command", ("eval", "--workdir", "{run}", "--prompt", "hi"),
         "--prompt is not a flag of 'eval'"),
    Case("missing_required_flag", ("export", "--workdir", "{run}"), "--out is required"),
]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, run_cli) -> Path:
    """One finished TINY run (checkpoints 10 and 20, metrics), copied by every case."""
    run = tmp_path_factory.mktemp("prepared") / "run"
    out = run_cli("train", *TINY, "--workdir", str(run), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def _copy(prepared: Path, tmp_path: Path) -> tuple[Path, Path]:
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    shutil.copytree(prepared, run)
    tmp.mkdir()
    return run, tmp


@dataclasses.dataclass
class Outcome:
    out: subprocess.CompletedProcess
    fill: Callable[[str], str]  # the case's text with {run} and {tmp} filled in
    before: dict[str, str]  # the run's files before the command
    after: dict[str, str]


def _run_case(cli, case: Case, prepared: Path, tmp_path: Path) -> Outcome:
    run, tmp = _copy(prepared, tmp_path)
    if case.setup is not None:
        case.setup(run, tmp)
    before = _digests(run)
    fill = lambda s: s.replace("{run}", str(run)).replace("{tmp}", str(tmp))  # noqa: E731
    out = cli(*map(fill, case.args), timeout=120)
    return Outcome(out, fill, before, _digests(run))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(case, prepared, tmp_path, run_cli):
    outcome = _run_case(run_cli, case, prepared, tmp_path)
    out, fill = outcome.out, outcome.fill
    lines = out.stderr.splitlines()
    assert out.returncode == case.code, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), out.stderr[-3000:]
    assert fill(case.message) in lines[-1], lines[-1]
    assert [line for line in lines[:-1] if not NOISE.match(line)] == [], out.stderr
    assert out.stdout == ""
    assert outcome.after == outcome.before, "a file of the run changed"


def test_the_table_covers_every_command():
    from jaxtrain.cli import COMMANDS

    assert {c.args[0] for c in CASES} >= set(COMMANDS)


# --- interrupted runs: re-running the command ends where the uninterrupted run ended ----------


def _values(run: Path) -> list[dict]:
    keep = ("train/", "validation/", "test/")
    return [{k: v for k, v in r.items() if k == "step" or k.startswith(keep)}
            for r in read_metrics(run)]  # fmt: skip


def _resume(cli, run: Path, *extra: str) -> subprocess.CompletedProcess:
    out = cli(*TRAIN[:-1], str(run), *extra, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return out


def test_torn_metrics_line_is_set_aside_and_the_run_resumes(prepared, tmp_path, run_cli):
    """A kill while writing the step-20 validation record, before the step-20 save."""
    run, _ = _copy(prepared, tmp_path)
    shutil.rmtree(run / "checkpoints" / "20")
    text = (run / "metrics.jsonl").read_text()
    cut = text.index('{"step": 20, "validation/') + 30
    (run / "metrics.jsonl").write_text(text[:cut])
    out = _resume(run_cli, run)
    assert f"warning: the last line of {run}/metrics.jsonl is torn" in out.stderr
    assert "resumed from checkpoint step 10" in out.stderr
    assert (run / "metrics.jsonl.torn").read_text() == text[
        text.rindex("\n", 0, cut) + 1 : cut
    ] + "\n"
    assert _values(run) == _values(prepared)


def test_killed_during_the_first_save_reruns_without_duplicate_records(prepared, tmp_path, run_cli):
    """Metrics of steps 1-10 written, the step-10 save left half done (orbax's temporary
    folder): the rerun starts at step 0 and rewrites those records once, not twice."""
    run, _ = _copy(prepared, tmp_path)
    shutil.rmtree(run / "checkpoints" / "20")
    (run / "checkpoints" / "10").rename(run / "checkpoints" / "10.orbax-checkpoint-tmp-1733000000")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:2]))
    out = _resume(run_cli, run)
    assert "resumed" not in out.stderr
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20"]
    assert _values(run) == _values(prepared)


def test_fresh_start_over_damaged_checkpoints_only_when_asked(prepared, tmp_path, run_cli):
    """After the refusal (case every_checkpoint_damaged), the flag trains the run again."""
    run, _ = _copy(prepared, tmp_path)
    _damaged_earlier(run, tmp_path)
    old_metrics = (run / "metrics.jsonl").read_bytes()
    out = _resume(run_cli, run, "--config.checkpoint.allow_fresh_start=true")
    assert "warning: training from step 0 because checkpoint.allow_fresh_start is set" in out.stderr
    assert _values(run) == _values(prepared)  # the same run again, from step 0
    aside = sorted(os.listdir(run / "checkpoints_damaged"))
    assert [name.split("-")[0] for name in aside] == ["10", "20", "metrics.jsonl"]
    assert (run / "checkpoints_damaged" / aside[-1]).read_bytes() == old_metrics
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20"]
