"""Validation of a config before anything compiles: each impossible value named by its field.

`validate_config` checks the config alone (and against the device count); once the dataset is
known, `validate_against_dataset` checks the model against its classes and tokenizer.
"""

import difflib

import ml_collections

from jaxtrain import batch_fit
from jaxtrain.config import (
    CLASS_WEIGHTING_NAMES,
    DROPOUT_RNG_NAMES,
    OPTIMIZER_NAMES,
    SAMPLING_NAMES,
    SCHEDULE_NAMES,
    get_config,
)
from jaxtrain.data.packing import PACKINGS
from jaxtrain.data.registry import LANGUAGE_MODELING, validate_dataset_name
from jaxtrain.errors import ConfigError, DataError
from jaxtrain.lora import lora_settings
from jaxtrain.models.pretrained import check_pretrained
from jaxtrain.models.registry import get_family, model_names, settings_from_config
from jaxtrain.prune import prune_settings


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def _check_choice(value: str, field: str, names: tuple[str, ...]) -> None:
    _check(value in names, field, f"{value!r} is not one of {', '.join(names)}")


def validate_config(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ConfigError naming the first impossible field; runs before any compilation.

    `num_devices` is the number of batch shards (mesh data x fsdp; tensor-parallel devices
    share rows)."""
    _check_known_fields(c, get_config())
    for field in ("total_steps", "batch_size", "eval_batch_size", "log_every", "eval_every"):
        _check(c[field] > 0, field, f"must be > 0, got {c[field]}")
    _check(
        c.eval_steps >= 0, "eval_steps", f"must be >= 0 (0: the whole split), got {c.eval_steps}"
    )
    _check(c.num_devices == -1 or c.num_devices > 0, "num_devices", "must be -1 (all) or > 0")
    _check(c.num_seeds >= 1, "num_seeds", f"must be >= 1, got {c.num_seeds}")
    _check_choice(c.dropout_rng, "dropout_rng", DROPOUT_RNG_NAMES)
    _check(c.fingerprint_every >= 0, "fingerprint_every", "must be >= 0 (0: off)")
    _check(
        c.num_seeds == 1 or c.fingerprint_every == 0,
        "fingerprint_every",
        f"is not supported with num_seeds={c.num_seeds}; fingerprint one seed per run",
    )
    if c.num_seeds > 1:
        _check(
            tuple(c.mesh.shape)[1:] == (1, 1),
            "mesh.shape",
            f"num_seeds={c.num_seeds} trains replicated members: use a data-parallel mesh "
            f"(-1, 1, 1), got {tuple(c.mesh.shape)}",
        )
        _check(
            not ("pretrained" in c.model and c.model.pretrained),
            "model.pretrained",
            "is not supported with num_seeds > 1",
        )
        _check(not c.init_from, "init_from", "is not supported with num_seeds > 1")
    accum = _validate_grad_accum(c.optimizer)
    _check(
        c.batch_size % (num_devices * accum) == 0,
        "batch_size",
        f"{c.batch_size} is not divisible by batch shards (data x fsdp) x grad_accum_steps = "
        f"{num_devices} x {accum};"
        " pick a multiple",
    )
    _check(
        c.eval_batch_size % num_devices == 0,
        "eval_batch_size",
        f"{c.eval_batch_size} is not divisible by the {num_devices} batch shards (data x fsdp)",
    )
    try:
        validate_dataset_name(c.data.name)  # the dataset registry: jaxtrain/data/registry.py
    except DataError as e:
        raise ConfigError(f"config.data.name: {e}") from e
    _check(c.data.validation_size >= 0, "data.validation_size", "must be >= 0")
    _check(c.data.seq_len > 1, "data.seq_len", f"must be > 1, got {c.data.seq_len}")
    _check(c.data.augment_crop_pad >= 0, "data.augment_crop_pad", "must be >= 0 (0: off)")
    _check_choice(c.data.sampling, "data.sampling", SAMPLING_NAMES)
    _check_choice(c.data.packing, "data.packing", PACKINGS)
    _check(
        c.compile_cache_dir != "", "compile_cache_dir", "use auto, off or a directory, not empty"
    )
    _validate_model(c.model)
    _validate_optimizer(c.optimizer, c.total_steps)
    _validate_checkpoint(c.checkpoint)
    _check(
        c.drift.num_examples >= 0,
        "drift.num_examples",
        f"must be >= 0 (0 turns drift monitoring off), got {c.drift.num_examples}",
    )
    _validate_profile(c.profile, c.total_steps)
    _validate_distill(c.distill)
    if c.distill.teacher:
        for field, on in (("optimizer.grad_accum_steps", accum == batch_fit.AUTO),
                          ("fingerprint_every", c.fingerprint_every > 0)):  # fmt: skip
            _check(not on, field, "is not supported with distill.teacher yet")
    prune_settings(c)  # raises ConfigError naming the config.prune field
    _validate_finetune(c)
    _check(c.early_stopping.patience >= 0, "early_stopping.patience", "must be >= 0 (0: off)")
    _check(c.early_stopping.min_delta >= 0, "early_stopping.min_delta", "must be >= 0")
    _check(
        c.early_stopping.patience == 0 or c.checkpoint.keep_best >= 1,
        "checkpoint.keep_best",
        "must be >= 1 with early stopping, which tests the best checkpoint",
    )
    ls = c.loss.label_smoothing
    _check(0.0 <= ls < 1.0, "loss.label_smoothing", f"must be in [0, 1), got {ls}")
    _check_choice(c.loss.class_weighting, "loss.class_weighting", CLASS_WEIGHTING_NAMES)
    if c.loss.class_weighting == "given":
        w = tuple(c.loss.class_weights)
        _check(
            "num_classes" in c.model,
            "loss.class_weighting",
            f"'given' class weights need a classifier; model {c.model.name!r} has no classes",
        )
        _check(
            len(w) == c.model.num_classes and all(x > 0 for x in w),
            "loss.class_weights",
            f"needs {c.model.num_classes} positive weights (one per class), got {w}",
        )


def _check_known_fields(
    c: ml_collections.ConfigDict, base: ml_collections.ConfigDict, prefix: str = ""
) -> None:
    """Experiment files set fields on an unlocked config, where a misspelled one would be
    silently ignored. config.model's fields are checked by its family (models/registry.py)."""
    for key in c.keys():
        if key not in base:
            close = difflib.get_close_matches(key, list(base.keys()), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            _check(
                False, prefix + key, f"is not a field of the base config (jaxtrain/config.py){hint}"
            )
        nested = isinstance(c[key], ml_collections.ConfigDict)
        if key != "model" and nested and isinstance(base[key], ml_collections.ConfigDict):
            _check_known_fields(c[key], base[key], f"{prefix}{key}.")


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


def _validate_profile(p: ml_collections.ConfigDict, total_steps: int) -> None:
    _check(p.start_step >= 0, "profile.start_step", f"must be >= 0, got {p.start_step}")
    _check(p.num_steps >= 0, "profile.num_steps", f"must be >= 0 (0: off), got {p.num_steps}")
    last = p.start_step + p.num_steps
    _check(
        p.num_steps == 0 or last <= total_steps,
        "profile.start_step",
        f"the trace would cover steps {p.start_step + 1}..{last}, beyond total_steps="
        f"{total_steps}; lower profile.start_step or profile.num_steps",
    )


def _validate_finetune(c: ml_collections.ConfigDict) -> None:
    """Ranges and combinations; the patterns are matched against the model's params by
    lora.plan_lora, still before compiling."""
    if not lora_settings(c).enabled:  # raises ConfigError naming the config.finetune field
        return
    unsupported = (
        ("num_seeds", c.num_seeds > 1),
        ("optimizer.ema_decay", c.optimizer.ema_decay > 0),
        ("prune.target_sparsity", c.prune.target_sparsity > 0),
        ("distill.teacher", bool(c.distill.teacher)),
        ("fingerprint_every", c.fingerprint_every > 0),
    )
    for field, on in unsupported:
        _check(not on, field, "is not supported with LoRA (finetune.lora_rank > 0) yet")


def _validate_distill(d: ml_collections.ConfigDict) -> None:
    """Ranges only; the teacher run itself is checked against the student by load_teacher."""
    _check(0.0 <= d.alpha <= 1.0, "distill.alpha", f"must be in [0, 1], got {d.alpha}")
    _check(d.temperature > 0, "distill.temperature", f"must be > 0, got {d.temperature}")


def _validate_model(m: ml_collections.ConfigDict) -> None:
    """The family's settings dataclass validates its own fields (jaxtrain/models/)."""
    settings = settings_from_config(m)
    # hf:FOLDER: the folder's config.json against every architecture field (vocab_size once the
    # tokenizer has filled it: build.create_state_and_spec checks again before init).
    check_pretrained(getattr(settings, "pretrained", ""), m.name, settings)


def _validate_grad_accum(o: ml_collections.ConfigDict) -> int:
    """Checks grad_accum_steps and memory_budget_gb; returns the accumulation the batch must
    divide by (1 for "auto", which picks a divisor itself)."""
    accum = o.grad_accum_steps
    budget = o.memory_budget_gb
    _check(
        isinstance(budget, int | float) and budget >= 0,
        "optimizer.memory_budget_gb",
        f"must be >= 0 (GB per device; 0: the device's memory), got {budget!r}",
    )
    if accum == batch_fit.AUTO:
        return 1
    is_int = isinstance(accum, int) and not isinstance(accum, bool)
    _check(
        is_int,
        "optimizer.grad_accum_steps",
        f"must be a whole number >= 1 or {batch_fit.AUTO!r}, got {accum!r}",
    )
    _check(accum >= 1, "optimizer.grad_accum_steps", f"must be >= 1, got {accum}")
    return accum


def _validate_optimizer(o: ml_collections.ConfigDict, total_steps: int) -> None:
    _check_choice(o.name, "optimizer.name", OPTIMIZER_NAMES)
    _check_choice(o.schedule, "optimizer.schedule", SCHEDULE_NAMES)
    _check(o.learning_rate > 0, "optimizer.learning_rate", f"must be > 0, got {o.learning_rate}")
    # A warmup as long as the run is clipped (with a warning) by warmup_steps(), so that
    # smoke runs with a small total_steps just work.
    _check(o.warmup_steps >= 0, "optimizer.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
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
    _check(
        0.0 <= o.ema_decay < 1.0,
        "optimizer.ema_decay",
        f"must be in [0, 1) (0: off; e.g. 0.999), got {o.ema_decay}",
    )


def warmup_steps(c: ml_collections.ConfigDict) -> tuple[int, str]:
    """optimizer.warmup_steps, clipped to total_steps - 1, and a warning when clipped."""
    warmup = c.optimizer.warmup_steps
    if warmup < c.total_steps:
        return warmup, ""
    clipped = c.total_steps - 1
    return clipped, (
        f"optimizer.warmup_steps={warmup} is not shorter than total_steps={c.total_steps}; "
        f"clipped to {clipped}"
    )


def validate_against_dataset(
    c: ml_collections.ConfigDict, *, task: str, num_classes: int, vocab_size: int
) -> None:
    """Checks the config against the prepared dataset and tokenizer, still before compiling."""
    m = c.model
    _check(
        c.data.packing == "none" or task == LANGUAGE_MODELING,
        "data.packing",
        f"{c.data.packing!r} packs language-modeling documents; {c.data.name!r} is {task} "
        "(use none)",
    )
    allowed = [name for name in model_names() if task in get_family(name).tasks]
    _check(
        task in get_family(m.name).tasks,
        "model.name",
        f"{m.name!r} cannot train on {c.data.name!r} ({task}); use one of {', '.join(allowed)}",
    )
    if "num_classes" in m:
        _check(
            m.num_classes == num_classes,
            "model.num_classes",
            f"{m.num_classes} but dataset {c.data.name!r} has {num_classes} classes",
        )
    if "vocab_size" in m:
        _check(
            m.vocab_size in (0, vocab_size),
            "model.vocab_size",
            f"{m.vocab_size} does not match the tokenizer {c.data.tokenizer!r} ({vocab_size}"
            " tokens); set 0 to take the tokenizer's",
        )
    if "max_len" in m:
        _check(
            c.data.seq_len <= m.max_len,
            "data.seq_len",
            f"{c.data.seq_len} is longer than model.max_len={m.max_len}",
        )
