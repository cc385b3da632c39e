"""The base config, which holds every default, and its validation.

Experiment files start from `get_config()` here and override a handful of fields. The config is
locked, so an unknown key is an error; `validate_config` catches impossible values before anything
is compiled and names the field.
"""

import ml_collections

MODEL_NAMES = ("mlp", "cnn")
INIT_NAMES = ("he", "xavier")
NORM_NAMES = ("batchnorm", "layernorm", "none")
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULE_NAMES = ("constant", "piecewise", "exponential", "cosine", "warmup_cosine", "sgdr")
DATASET_NAMES = ("fashion_mnist",)


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and says what to do."""


def get_config() -> ml_collections.ConfigDict:
    """Returns the base config with every default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 1000
    c.batch_size = 128  # global batch per optimizer update, over all devices and processes
    c.eval_batch_size = 1000
    c.log_every = 100
    c.eval_every = 500  # validation-split evaluation; the test split is evaluated once at the end
    c.num_devices = -1  # -1: all devices; N: the first N (a data-parallel mesh)
    c.init_from = ""  # warm start: a run dir or checkpoint to load params (not optimizer) from

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0; or $JAXTRAIN_COORDINATOR
    c.distributed.num_processes = 1  # or $JAXTRAIN_NUM_PROCESSES
    c.distributed.process_id = -1  # -1: $JAXTRAIN_PROCESS_ID
    c.distributed.auto = False  # let JAX detect everything (TPU VMs, SLURM)
    c.distributed.cpu_devices_per_process = 0  # CPU-only runs: fake devices per process
    c.distributed.timeout_s = 120  # joining the coordinator fails after this, never hangs

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.data_dir = ""  # "": $JAXTRAIN_DATA_DIR, else ./.data/tfds
    c.data.validation_size = 5000  # carved deterministically from the end of the train split
    c.data.prefetch = 2  # batches read ahead in a background thread
    c.data.in_memory = True  # decode each split into RAM once (fast random access; small sets)

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"
    c.model.num_classes = 10
    c.model.init = "he"
    c.model.norm = "batchnorm"
    c.model.dropout = 0.1
    c.model.features = (32, 64)  # cnn: channels per stage; mlp: hidden widths
    c.model.convs_per_stage = 1
    c.model.hidden = 256  # cnn: width of the dense layer before the classifier

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 0
    c.optimizer.weight_decay = 0.0  # decoupled for adamw, L2 for the rest; skips biases/scales
    c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 turns it off
    c.optimizer.grad_accum_steps = 1  # micro-batches per step; the update equals the big batch's
    c.optimizer.momentum = 0.9  # momentum, nesterov, rmsprop
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.end_lr_factor = 0.0  # cosine-family: final lr as a fraction of the peak
    c.optimizer.decay_rate = 0.1  # piecewise: factor at each boundary; exponential: per period
    c.optimizer.boundaries = (0.5, 0.75)  # piecewise: fractions of total_steps
    c.optimizer.decay_steps = 1000  # exponential: steps per decay_rate factor
    c.optimizer.restart_period = 1000  # sgdr: steps in the first cycle
    c.optimizer.restart_mult = 2.0  # sgdr: each cycle is this much longer than the previous

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1000  # steps; also saved at the end and on SIGTERM/SIGINT
    c.checkpoint.keep = 2  # the newest N
    c.checkpoint.keep_best = 1  # plus the best N by best_metric (0: none)
    c.checkpoint.best_metric = "validation/accuracy"
    c.checkpoint.best_mode = "max"  # max or min
    c.checkpoint.async_save = True  # the loop blocks only while arrays are copied to host

    c.early_stopping = ml_collections.ConfigDict()
    c.early_stopping.patience = 0  # evaluations without improvement; 0 turns it off
    c.early_stopping.min_delta = 0.0  # smallest change of checkpoint.best_metric that counts
    # The metric and its direction are checkpoint.best_metric / best_mode, so the best
    # checkpoint (tested at the end) is the one early stopping picked.

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0
    return c


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def _check_choice(value: str, field: str, names: tuple[str, ...]) -> None:
    _check(value in names, field, f"{value!r} is not one of {', '.join(names)}")


def validate_config(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ConfigError naming the first impossible field; runs before any compilation."""
    for field in ("total_steps", "batch_size", "eval_batch_size", "log_every", "eval_every"):
        _check(c[field] > 0, field, f"must be > 0, got {c[field]}")
    _check(c.num_devices == -1 or c.num_devices > 0, "num_devices", "must be -1 (all) or > 0")
    accum = c.optimizer.grad_accum_steps
    _check(accum >= 1, "optimizer.grad_accum_steps", f"must be >= 1, got {accum}")
    _check(
        c.batch_size % (num_devices * accum) == 0,
        "batch_size",
        f"{c.batch_size} is not divisible by devices x grad_accum_steps = {num_devices} x {accum};"
        " pick a multiple",
    )
    _check(
        c.eval_batch_size % num_devices == 0,
        "eval_batch_size",
        f"{c.eval_batch_size} is not divisible by the {num_devices} devices",
    )
    _check_choice(c.data.name, "data.name", DATASET_NAMES)
    _check(c.data.validation_size >= 0, "data.validation_size", "must be >= 0")
    _validate_model(c.model)
    _validate_optimizer(c.optimizer, c.total_steps)
    _validate_checkpoint(c.checkpoint)
    _check(c.early_stopping.patience >= 0, "early_stopping.patience", "must be >= 0 (0: off)")
    _check(c.early_stopping.min_delta >= 0, "early_stopping.min_delta", "must be >= 0")
    _check(
        c.early_stopping.patience == 0 or c.checkpoint.keep_best >= 1,
        "checkpoint.keep_best",
        "must be >= 1 with early stopping, which tests the best checkpoint",
    )
    ls = c.loss.label_smoothing
    _check(0.0 <= ls < 1.0, "loss.label_smoothing", f"must be in [0, 1), got {ls}")


def _validate_checkpoint(k: ml_collections.ConfigDict) -> None:
    _check(k.every > 0, "checkpoint.every", f"must be > 0, got {k.every}")
    _check(k.keep >= 1, "checkpoint.keep", f"must be >= 1, got {k.keep}")
    _check(k.keep_best >= 0, "checkpoint.keep_best", f"must be >= 0, got {k.keep_best}")
    _check_choice(k.best_mode, "checkpoint.best_mode", ("max", "min"))
    _check(
        k.best_metric.startswith("validation/"),
        "checkpoint.best_metric",
        f"must be a validation metric such as validation/accuracy, got {k.best_metric!r}",
    )


def _validate_model(m: ml_collections.ConfigDict) -> None:
    _check_choice(m.name, "model.name", MODEL_NAMES)
    _check_choice(m.init, "model.init", INIT_NAMES)
    _check_choice(m.norm, "model.norm", NORM_NAMES)
    _check(m.num_classes >= 2, "model.num_classes", f"must be >= 2, got {m.num_classes}")
    _check(0.0 <= m.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _check(len(m.features) > 0, "model.features", "must name at least one width")
    _check(all(f > 0 for f in m.features), "model.features", f"widths must be > 0: {m.features}")


def _validate_optimizer(o: ml_collections.ConfigDict, total_steps: int) -> None:
    _check_choice(o.name, "optimizer.name", OPTIMIZER_NAMES)
    _check_choice(o.schedule, "optimizer.schedule", SCHEDULE_NAMES)
    _check(o.learning_rate > 0, "optimizer.learning_rate", f"must be > 0, got {o.learning_rate}")
    _check(
        0 <= o.warmup_steps < total_steps,
        "optimizer.warmup_steps",
        f"must be in [0, total_steps={total_steps}), got {o.warmup_steps}",
    )
    _check(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    _check(o.clip_norm >= 0, "optimizer.clip_norm", "must be >= 0 (0 turns clipping off)")
    _check(
        all(0 < b < 1 for b in o.boundaries) and list(o.boundaries) == sorted(o.boundaries),
        "optimizer.boundaries",
        f"must be increasing fractions of total_steps in (0, 1), got {o.boundaries}",
    )
    _check(o.decay_steps > 0, "optimizer.decay_steps", "must be > 0")
    _check(o.restart_period > 0, "optimizer.restart_period", "must be > 0")
    _check(o.restart_mult >= 1.0, "optimizer.restart_mult", "must be >= 1")
