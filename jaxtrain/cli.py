"""Command line: `python -m jaxtrain SUBCOMMAND --config FILE --workdir DIR [--config.a.b=v]`.

The only module that defines flags. It parses, then calls the library.
"""

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

COMMANDS = ("train", "eval", "export", "prepare", "plot")
USAGE = (
    "usage: python -m jaxtrain train --config experiments/NAME.py --workdir DIR "
    "[--config.a.b=value ...]\n"
    "       python -m jaxtrain eval --workdir DIR [--checkpoint best|latest|STEP]\n"
    "       python -m jaxtrain export --workdir DIR --out model.jaxexport [--checkpoint ...]\n"
    "       python -m jaxtrain plot DIR [DIR ...] --out curves.png\n"
    "       python -m jaxtrain prepare DATASET [--data_dir DIR] [--manual_dir DIR]"
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (prepare only).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the raw source files.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_OUT = flags.DEFINE_string("out", None, "plot: the PNG; export: the .jaxexport file.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "eval: best, latest or a step number.")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _train() -> None:
    from jaxtrain.train import train_and_evaluate  # jax is imported only when needed

    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a failed load surfaces lazily, on first attribute access
    except OSError as e:
        _fail(f"cannot load --config: {' '.join(str(e).split())}")
    if config is None:
        _fail("--config is required, e.g. --config experiments/fashion_mnist_cnn.py")
    if not _WORKDIR.value:
        _fail("--workdir is required")
    train_and_evaluate(config, _WORKDIR.value, progress=_PROGRESS.value)


def _eval() -> None:
    from jaxtrain.evaluate import evaluate_checkpoint

    if not _WORKDIR.value:
        _fail("--workdir is required")
    evaluate_checkpoint(_WORKDIR.value, _CHECKPOINT.value)


def _plot(run_dirs: list[str]) -> None:
    from jaxtrain.plot import plot_runs

    out = _OUT.value or "curves.png"
    plot_runs(run_dirs, out)
    print(f"wrote {out}")


def _export() -> None:
    from jaxtrain.export import export_model

    if not _WORKDIR.value or not _OUT.value:
        _fail("export needs --workdir DIR and --out FILE.jaxexport")
    export_model(_WORKDIR.value, _CHECKPOINT.value, _OUT.value)


def _prepare(args: list[str]) -> None:
    from jaxtrain import data
    from jaxtrain.build import resolve_data_dir

    if len(args) != 1:
        _fail(f"prepare takes one dataset name, one of: {', '.join(data.DATASETS)}")
    data_dir = resolve_data_dir(_DATA_DIR.value or "")
    data.prepare_dataset(args[0], data_dir, _MANUAL_DIR.value)
    print(f"prepared {args[0]} in {data_dir}")


def main(argv: list[str]) -> None:
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise
    if len(argv) < 2 or argv[1] not in COMMANDS:
        _fail(f"expected a command, one of: {', '.join(COMMANDS)}\n{USAGE}")
    command, rest = argv[1], argv[2:]
    if command not in ("prepare", "plot") and rest:
        _fail(f"unexpected arguments {rest}\n{USAGE}")
    try:
        if command == "train":
            _train()
        elif command == "eval":
            _eval()
        elif command == "plot":
            _plot(rest)
        elif command == "export":
            _export()
        else:
            _prepare(rest)
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
