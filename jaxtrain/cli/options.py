"""The flags of `python -m jaxtrain` (the only module that defines them; absl flags are
global, and each command accepts its own: see COMMANDS in commands.py), and the helpers every
command uses to fail with one line and to read its config.
"""

import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from jaxtrain.cli.help import PROG
from jaxtrain.errors import EXIT_BAD_INPUT

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file with get_config(); --config.a.b=value overrides one field."
)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir (default: $JAXTRAIN_DATA_DIR or ~/tensorflow_datasets)."
)
MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the raw source files.")
PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
OUT = flags.DEFINE_string("out", None, "The output file.")
CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "best, latest or a step number.")
INT8 = flags.DEFINE_bool("int8", False, "int8 weight-only quantized weights (image models).")
FORMAT = flags.DEFINE_string(
    "format", "jax_export", "export: jax_export (StableHLO) or hf (a transformers folder)."
)
# prepare user_text / user_images
NAME = flags.DEFINE_string("name", None, "user_text/user_images: dataset name (user:NAME).")
FILE = flags.DEFINE_string("file", None, "user_text: a .csv or .jsonl file.")
FOLDER = flags.DEFINE_string("folder", None, "user_images: one subfolder per class.")
TEXT_COLUMN = flags.DEFINE_string("text_column", "text", "user_text: the text column.")
LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "user_text: the label column.")
IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "user_images: resize to NxN (0: no).")
# tokenizer train
KIND = flags.DEFINE_string("kind", None, "bpe, wordpiece or char.")
CORPUS = flags.DEFINE_string("corpus", None, "A prepared dataset's name or a text file.")
VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")
# sample
PROMPT = flags.DEFINE_string("prompt", None, "The text to continue.")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate.")
TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 is greedy.")
TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the K most likely tokens (0: all).")
SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
# bench / estimate
STEPS = flags.DEFINE_integer("steps", 200, "Timed steps.")
WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed steps first (compile, caches).")
REPEATS = flags.DEFINE_integer("repeats", 1, "Interleaved repeats of both loops.")
HARDWARE = flags.DEFINE_string("hardware", None, "h100, h200, a100, tpu_v5p, ...")
PRICE = flags.DEFINE_float("price_per_hour", None, "Dollars per device-hour.")
MFU = flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation.")
COMPARE_TO = flags.DEFINE_string("compare_to", "", "Another hardware entry to compare with.")
COMPARE_PRICE = flags.DEFINE_float("compare_price", None, "Its price per device-hour.")
NUM_DEVICES = flags.DEFINE_integer("num_devices", 0, "Devices (0: the config's num_devices).")
# sweep
GRID = flags.DEFINE_multi_string("grid", [], "FIELD=v1,v2,...: values to try.")
RANDOM = flags.DEFINE_multi_string(
    "random", [], "FIELD=loguniform:lo:hi | uniform:lo:hi | choice:a,b: a random sweep."
)
TRIALS = flags.DEFINE_integer("trials", 0, "Number of trials (0: the whole grid).")
SWEEP_SEED = flags.DEFINE_integer("sweep_seed", 0, "Seed of the random trial choice.")
PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials run at once.")
METRIC = flags.DEFINE_string("metric", "", "Rank by this metric (default: best_metric).")
MODE = flags.DEFINE_string("mode", "", "max or min (default: checkpoint.best_mode).")
# compare / reproduce
CONFIG_B = flags.DEFINE_string("config_b", None, "Arm B's experiment file.")
B = flags.DEFINE_multi_string("b", [], "FIELD=VALUE: arm B is arm A with this override.")
SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per arm (num_seeds), trained vmapped.")
TABLE = flags.DEFINE_bool("table", False, "Print README's results table instead.")
# drift
DATA = flags.DEFINE_string("data", None, "A prepared dataset, NAME or NAME:SPLIT (default: test).")
TRANSFORM = flags.DEFINE_multi_string(
    "transform", [], "brightness:DELTA or rotate:90|180|270, applied to the images in order."
)
THRESHOLD = flags.DEFINE_float("threshold", 0.2, "A PSI above this flags drift (exit code 1).")


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


def load_config() -> ml_collections.ConfigDict:
    try:
        config = CONFIG.value
        if config is not None:
            config.keys()  # a failed load surfaces lazily, on first attribute access
    except OSError as e:
        fail(f"cannot load --config: {' '.join(str(e).split())}")
    if not isinstance(config, ml_collections.ConfigDict):
        path = config_flags.get_config_filename(flags.FLAGS["config"])
        fail(f"--config {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def data_dir() -> str:
    from jaxtrain.build import resolve_data_dir

    return resolve_data_dir(DATA_DIR.value or "")


def config_overrides(argv: list[str]) -> list[str]:
    """The --config.a.b=v flags as given: every sweep trial, and compare's arm B, get them."""
    return [a for a in argv if a.startswith("--config.")]
