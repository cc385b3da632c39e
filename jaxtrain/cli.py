"""Command line: `python -m jaxtrain SUBCOMMAND ...` (see USAGE).

The only module that defines flags. It parses, then calls the library.
"""

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from jaxtrain.config import ConfigError
from jaxtrain.errors import (
    EXIT_BAD_INPUT,
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    CheckpointError,
    DataError,
    Preempted,
)

COMMANDS = (
    "train",
    "eval",
    "export",
    "prepare",
    "plot",
    "tokenizer",
    "sample",
    "bench",
    "estimate",
    "sweep",
)
USAGE = """\
usage: python -m jaxtrain train --config experiments/NAME.py --workdir DIR [--config.a.b=value ...]
       python -m jaxtrain eval --workdir DIR [--checkpoint best|latest|STEP]
       python -m jaxtrain export --workdir DIR --out model.jaxexport [--checkpoint ...] [--int8]
       python -m jaxtrain plot DIR [DIR ...] --out curves.png
       python -m jaxtrain prepare fashion_mnist|shakespeare|mr_polarity|minilm [--data_dir DIR]
                                  [--manual_dir DIR]
       python -m jaxtrain prepare user_text --name NAME --file F.csv|F.jsonl
                                  [--text_column text] [--label_column label]
       python -m jaxtrain prepare user_images --name NAME --folder DIR [--image_size N]
       python -m jaxtrain tokenizer train --kind bpe|wordpiece|char --corpus NAME|FILE
                                  --vocab_size N --out tokenizer.json
       python -m jaxtrain sample --workdir DIR --prompt TEXT [--max_new_tokens N]
                                  [--temperature T] [--top_k K] [--seed S]
       python -m jaxtrain bench --config experiments/NAME.py [--steps N] [--warmup N] [--out F]
       python -m jaxtrain estimate --config experiments/NAME.py --hardware h100
                                  --price_per_hour 2.5 [--mfu 0.4] [--compare_to a100]
       python -m jaxtrain sweep --config experiments/NAME.py --workdir DIR [--grid a.b=v1,v2]
                                  [--random a.b=loguniform:lo:hi] [--trials N] [--parallel N]"""

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (prepare, tokenizer).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the raw source files.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_OUT = flags.DEFINE_string("out", None, "plot: PNG; export: .jaxexport; tokenizer: .json.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "best, latest or a step number.")
_INT8 = flags.DEFINE_bool("int8", False, "export: int8 weight-only quantized weights.")
# prepare user_text / user_images
_NAME = flags.DEFINE_string("name", None, "prepare user_*: the dataset name (data.name=user:NAME).")
_FILE = flags.DEFINE_string("file", None, "prepare user_text: a .csv or .jsonl file.")
_FOLDER = flags.DEFINE_string("folder", None, "prepare user_images: one subfolder per class.")
_TEXT_COLUMN = flags.DEFINE_string("text_column", "text", "prepare user_text: text column.")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "prepare user_text: label column.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "prepare user_images: resize to NxN (0: no).")
# tokenizer train
_KIND = flags.DEFINE_string("kind", None, "tokenizer train: bpe, wordpiece or char.")
_CORPUS = flags.DEFINE_string("corpus", None, "tokenizer train: dataset name or text file.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "tokenizer train: vocabulary size.")
# sample
_PROMPT = flags.DEFINE_string("prompt", None, "sample: the text to continue.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 200, "sample: tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "sample: 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample: keep the K most likely tokens (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "sample: random seed.")
# bench / estimate
_STEPS = flags.DEFINE_integer("steps", 200, "bench: timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "bench: untimed steps (compile, caches).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "bench: interleaved repeats of both loops.")
_HARDWARE = flags.DEFINE_string("hardware", None, "estimate: h100, h200, a100, tpu_v5p, ...")
_PRICE = flags.DEFINE_float("price_per_hour", None, "estimate: dollars per device-hour.")
_MFU = flags.DEFINE_float("mfu", 0.4, "estimate: assumed model FLOPs utilisation.")
_COMPARE_TO = flags.DEFINE_string("compare_to", "", "estimate: another hardware entry.")
_COMPARE_PRICE = flags.DEFINE_float("compare_price", None, "estimate: its price per hour.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0, "estimate: devices (0: the config's).")
# sweep
_GRID = flags.DEFINE_multi_string("grid", [], "sweep: FIELD=v1,v2,... (repeatable).")
_RANDOM = flags.DEFINE_multi_string(
    "random", [], "sweep: FIELD=loguniform:lo:hi | uniform:lo:hi | choice:a,b (repeatable)."
)
_TRIALS = flags.DEFINE_integer("trials", 0, "sweep: number of trials (0: whole grid).")
_SWEEP_SEED = flags.DEFINE_integer("sweep_seed", 0, "sweep: seed of the random trial choice.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "sweep: trials run at once.")
_METRIC = flags.DEFINE_string("metric", "", "sweep: rank by this metric (default: best_metric).")
_MODE = flags.DEFINE_string("mode", "", "sweep: max or min (default: checkpoint.best_mode).")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _config():
    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a failed load surfaces lazily, on first attribute access
    except OSError as e:
        _fail(f"cannot load --config: {' '.join(str(e).split())}")
    if config is None:
        _fail("--config is required, e.g. --config experiments/fashion_mnist_cnn.py")
    return config


def _need(**values) -> None:
    missing = [f"--{k}" for k, v in values.items() if v in (None, "")]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        _fail(f"{' and '.join(missing)} {verb} required\n{USAGE}")


def _data_dir() -> str:
    from jaxtrain.build import resolve_data_dir

    return resolve_data_dir(_DATA_DIR.value or "")


def _train() -> None:
    from jaxtrain.train import train_and_evaluate  # jax is imported only when needed

    config = _config()
    _need(workdir=_WORKDIR.value)
    train_and_evaluate(config, _WORKDIR.value, progress=_PROGRESS.value)


def _eval() -> None:
    from jaxtrain.tools.evaluate import evaluate_checkpoint

    _need(workdir=_WORKDIR.value)
    evaluate_checkpoint(_WORKDIR.value, _CHECKPOINT.value)


def _plot(run_dirs: list[str]) -> None:
    from jaxtrain.tools.plot import plot_runs

    out = _OUT.value or "curves.png"
    plot_runs(run_dirs, out)
    print(f"wrote {out}")


def _export() -> None:
    from jaxtrain.tools.export import export_model

    _need(workdir=_WORKDIR.value, out=_OUT.value)
    export_model(_WORKDIR.value, _CHECKPOINT.value, _OUT.value, int8=_INT8.value)


def _prepare(args: list[str]) -> None:
    from jaxtrain import data

    builtin = (*data.DATASETS, "shakespeare", "shakespeare_by_work", "mr_polarity", "minilm")
    if len(args) != 1:
        _fail(f"prepare takes one name, one of: {', '.join(builtin)}, user_text, user_images")
    name, data_dir = args[0], _data_dir()
    if name == "user_text":
        from jaxtrain.data.builders import user_data

        _need(name=_NAME.value, file=_FILE.value)
        out = user_data.prepare_text_dataset(
            _NAME.value,
            _FILE.value,
            text_column=_TEXT_COLUMN.value,
            label_column=_LABEL_COLUMN.value,
            data_dir=data_dir,
        )
    elif name == "user_images":
        from jaxtrain.data.builders import user_data

        _need(name=_NAME.value, folder=_FOLDER.value)
        out = user_data.prepare_image_folder(
            _NAME.value, _FOLDER.value, data_dir=data_dir, image_size=_IMAGE_SIZE.value or None
        )
    elif name == "minilm":
        from jaxtrain.data import fetch

        out = fetch.minilm_dir(data_dir, _MANUAL_DIR.value)
    else:
        data.prepare_dataset(name, data_dir, _MANUAL_DIR.value)
        out = data_dir
    print(f"prepared {name} in {out}")


def _tokenizer(args: list[str]) -> None:
    from jaxtrain.data.tokenizer import KINDS, tokenizer_train_main

    if args != ["train"]:
        _fail(f"tokenizer takes one action: train\n{USAGE}")
    _need(kind=_KIND.value, corpus=_CORPUS.value, out=_OUT.value)
    if _KIND.value not in KINDS:
        _fail(f"--kind={_KIND.value!r}: use one of {', '.join(KINDS)}")
    summary = tokenizer_train_main(
        _KIND.value, _CORPUS.value, _VOCAB_SIZE.value, _OUT.value, data_dir=_data_dir()
    )
    print(json.dumps(summary), flush=True)


def _sample() -> None:
    from jaxtrain.tools.sample import sample_from_run

    _need(workdir=_WORKDIR.value, prompt=_PROMPT.value)
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


def _bench() -> None:
    from jaxtrain.tools.bench import bench_main

    bench_main(
        _config(),
        steps=_STEPS.value,
        warmup=_WARMUP.value,
        out=_OUT.value or "",
        repeats=_REPEATS.value,
    )


def _estimate() -> None:
    from jaxtrain.tools.estimate import estimate_main

    config = _config()
    _need(hardware=_HARDWARE.value, price_per_hour=_PRICE.value)
    estimate_main(
        config,
        hardware=_HARDWARE.value,
        price_per_hour=_PRICE.value,
        mfu=_MFU.value,
        compare_to=_COMPARE_TO.value,
        compare_price=_COMPARE_PRICE.value,
        num_devices=_NUM_DEVICES.value or None,
    )


def _sweep() -> None:
    from jaxtrain.tools.sweep import sweep_main

    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    _need(config=config_file, workdir=_WORKDIR.value)
    sweep_main(
        config_file=config_file,
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


def _config_overrides(argv: list[str]) -> list[str]:
    """The --config.a.b=v flags as given, passed on to every sweep trial."""
    return [a for a in argv if a.startswith("--config.")]


def main(argv: list[str]) -> None:
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise
    if len(argv) < 2 or argv[1] not in COMMANDS:
        _fail(f"expected a command, one of: {', '.join(COMMANDS)}\n{USAGE}")
    command, rest = argv[1], argv[2:]
    if command not in ("prepare", "plot", "tokenizer") and rest:
        _fail(f"unexpected arguments {rest}\n{USAGE}")
    handlers = {
        "train": _train,
        "eval": _eval,
        "export": _export,
        "sample": _sample,
        "bench": _bench,
        "estimate": _estimate,
        "sweep": _sweep,
        "plot": lambda: _plot(rest),
        "prepare": lambda: _prepare(rest),
        "tokenizer": lambda: _tokenizer(rest),
    }
    try:
        handlers[command]()
    except FloatingPointError as e:
        _fail(str(e), code=EXIT_NONFINITE)
    except Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError) as e:
        # Bad input is reported as one line; a traceback is for bugs, not for typos.
        if os.environ.get("JAXTRAIN_DEBUG"):
            raise
        _fail(str(e))


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a typo in a config override becomes one line naming the field."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections wraps a KeyError (whose str() is a repr) in an AttributeError.
        inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
        text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
        _fail(f"bad command line: {' '.join(str(text).split())}")


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)
