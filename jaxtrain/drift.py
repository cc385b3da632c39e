"""Drift statistics of a model's inputs and predictions on a sample of a split, and PSI / KL
between two samples.

A sample is up to `num_examples` examples evenly spaced over a split (the same indices every
time). Its statistics are sums computed on device in one jitted pass (padding rows masked) and
fetched once:
- images: pixel values / 255 in VALUE_BINS bins per channel ("inputs/pixels"); each image's
  intensity mass over a GRID x GRID grid of cells ("inputs/spatial": rotations and crops keep
  the value histogram but move the mass); per-channel mean and std (reported, not thresholded);
- text: token frequencies, padding excluded ("inputs/tokens"), and for classification the
  length in tokens ("inputs/length");
- predictions: the predicted-class histogram ("predictions/class"; language models: predicted
  tokens) and the max softmax probability in CONFIDENCE_BINS bins ("predictions/confidence").

PSI = sum (a - e) ln(a / e) and KL = sum a ln(a / e), over the bin proportions e of the
reference and a of the compared sample; empty bins get EPS before renormalising. Categorical
statistics with more than MAX_CATEGORIES values (tokens, a language model's predictions) keep
the reference's MAX_CATEGORIES - 1 most frequent values and pool the rest into one bin. With n
observations on each side and k bins, PSI is about 2 (k - 1) / n without any drift (sampling
noise), so bins are few and samples are hundreds of examples.
"""

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain import metrics as metrics_lib
from jaxtrain.build import model_graphdef
from jaxtrain.data import image_source, pipeline, text_source
from jaxtrain.data.loader import DataOptions, DatasetInfo
from jaxtrain.errors import CheckpointError, DataError
from jaxtrain.evaluation import data_options
from jaxtrain.parallel import sharding
from jaxtrain.step import TrainState
from jaxtrain.writers import write_json

REFERENCE_FILE = "drift_reference.json"
FORMAT_VERSION = 1
VALUE_BINS = 32
GRID = 8
CONFIDENCE_BINS = 10
LENGTH_BINS = 8
MAX_CATEGORIES = 64
EPS = 1e-4


def sample_indices(num_available: int, num_examples: int) -> np.ndarray:
    """min(num_available, num_examples) distinct indices, evenly spaced from 0."""
    n = min(num_available, num_examples)
    return (np.arange(n, dtype=np.int64) * num_available) // n


class SampleSource:
    """A pipeline source over `indices` of another; `transform` maps each batch of uint8 images
    as it is read (drift checks of shifted data)."""

    def __init__(self, source: Any, indices: np.ndarray, transform: Callable | None = None):
        self._source = source
        self._indices = indices
        self._transform = transform
        self.where = source.where

    def __len__(self) -> int:
        return len(self._indices)

    def labels(self) -> np.ndarray:
        return self._source.labels()[self._indices]

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._source.read(self._indices[indices])
        if self._transform is not None:
            batch["inputs"] = self._transform(batch["inputs"])
        return batch


def open_sample(
    opts: DataOptions,
    info: DatasetInfo,
    split: str,
    num_examples: int,
    *,
    train: bool = False,
    transform: Callable | None = None,
) -> SampleSource:
    """The sample of `split` of dataset opts.name; `info` is that dataset's (its classes).

    Text is tokenized with opts.tokenizer and seq_len; train=True reads the split as training
    does (language modeling: full windows), so the tokenized split is shared with training.
    """
    if info.task == data_lib.IMAGE_CLASSIFICATION:
        source = image_source.open_image_source(
            opts.name,
            split,
            data_dir=opts.data_dir,
            validation_size=opts.validation_size,
            num_classes=info.num_classes,
            in_memory=opts.in_memory,
        )
    else:
        if split not in text_source.SPLITS:
            raise DataError(f"split must be one of {text_source.SPLITS}, got {split!r}")
        source = text_source.open_text_source(
            opts.name,
            split,
            data_dir=opts.data_dir,
            tokenizer=data_lib.load_tokenizer(opts.tokenizer, opts.data_dir),
            seq_len=opts.seq_len,
            train=train,
            num_classes=info.num_classes or None,
        )
    return SampleSource(source, sample_indices(len(source), num_examples), transform)


@dataclasses.dataclass(frozen=True)
class StatsSpec:
    """The static parts of the statistics pass."""

    graphdef: nnx.GraphDef
    task: str
    pixel_mean: float = 0.0  # images: the normalisation the model was trained with
    pixel_std: float = 1.0
    vocab_size: int = 0  # text
    pad_id: int = 0
    members: bool = False  # an ensemble state [K, ...]: statistics of member 0 (config.seed)


def image_stats(v_BxHxWxC: jax.Array, w_B: jax.Array) -> dict[str, jax.Array]:
    """Sums over the rows (weights w_B) of pixel values v in [0, 1]."""
    _, h, w, c = v_BxHxWxC.shape
    w_BxHxWxC = jnp.broadcast_to(w_B[:, None, None, None], v_BxHxWxC.shape)
    bins = jnp.clip((v_BxHxWxC * VALUE_BINS).astype(jnp.int32), 0, VALUE_BINS - 1)
    bins = bins + VALUE_BINS * jnp.arange(c)  # channel-major: [C, VALUE_BINS] flattened
    pixels = jnp.zeros(c * VALUE_BINS).at[bins.ravel()].add(w_BxHxWxC.ravel())
    mass_HxW = jnp.einsum("bhwc,b->hw", v_BxHxWxC, w_B)
    rows_GxH = jax.nn.one_hot(np.arange(h) * GRID // h, GRID).T
    cols_GxW = jax.nn.one_hot(np.arange(w) * GRID // w, GRID).T
    return {
        "inputs/pixels": pixels,
        "inputs/spatial": (rows_GxH @ mass_HxW @ cols_GxW.T).ravel(),
        "channel_sum": jnp.einsum("bhwc,b->c", v_BxHxWxC, w_B),
        "channel_sq": jnp.einsum("bhwc,b->c", v_BxHxWxC * v_BxHxWxC, w_B),
        "pixels_per_channel": jnp.sum(w_B) * h * w,
    }


def token_stats(spec: StatsSpec, x_BxL: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    """Token counts (padding excluded) and, for classification, lengths; weights w [B] or
    [B, L] (language modeling: positions past the end of the split are 0)."""
    w_BxL = w if w.ndim == 2 else jnp.broadcast_to(w[:, None], x_BxL.shape)
    real_BxL = (x_BxL != spec.pad_id) * w_BxL
    out = {"inputs/tokens": jnp.zeros(spec.vocab_size).at[x_BxL.ravel()].add(real_BxL.ravel())}
    if spec.task == data_lib.TEXT_CLASSIFICATION:
        seq_len = x_BxL.shape[1]
        length_B = jnp.sum(x_BxL != spec.pad_id, axis=1)
        bins = jnp.minimum(length_B * LENGTH_BINS // seq_len, LENGTH_BINS - 1)
        out["inputs/length"] = jnp.zeros(LENGTH_BINS).at[bins].add(w)
    return out


def prediction_stats(logits: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    """Predicted classes and confidences over the weighted positions ([B] or [B, L])."""
    confidence = jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    preds = jnp.argmax(logits, axis=-1)
    bins = jnp.clip((confidence * CONFIDENCE_BINS).astype(jnp.int32), 0, CONFIDENCE_BINS - 1)
    return {
        "predictions/class": jnp.zeros(logits.shape[-1]).at[preds.ravel()].add(w.ravel()),
        "predictions/confidence": jnp.zeros(CONFIDENCE_BINS).at[bins.ravel()].add(w.ravel()),
    }


def stats_step(spec: StatsSpec, state: TrainState, batch: dict[str, jax.Array]) -> dict:
    """Sums of every statistic over one batch of raw inputs (uint8 images or token ids) and
    its mask ([B], or [B, L] for language modeling); pure."""
    # The live weights as the model sees them (LoRA: adapters merged into the frozen base).
    params, model_state = state.model_params(state.params), state.model_state
    if spec.members:
        params, model_state = jax.tree.map(lambda x: x[0], (params, model_state))
    x, mask = batch["inputs"], batch["mask"]
    row_B = mask if mask.ndim == 1 else jnp.max(mask, axis=1)
    if spec.task == data_lib.IMAGE_CLASSIFICATION:
        v = x.astype(jnp.float32) / 255.0
        out = image_stats(v, row_B)
        x = (v - spec.pixel_mean) / spec.pixel_std
    else:
        out = token_stats(spec, x, mask)
    model = nnx.merge(spec.graphdef, params, model_state, copy=True)
    logits = model(x, train=False, dropout_key=jax.random.key(0))  # eval mode: no dropout
    out.update(prediction_stats(logits, mask))
    out["count"] = jnp.sum(row_B)
    return out


def create_stats_fn(c: ml_collections.ConfigDict, info: DatasetInfo, mesh) -> Callable:
    """The jitted statistics pass of run config `c`: (state, batch) -> replicated sums."""
    opts = data_options(c)
    mean, std = 0.0, 1.0
    if info.task == data_lib.IMAGE_CLASSIFICATION:
        mean, std = data_lib.pixel_stats(opts.name, opts.data_dir)
    spec = StatsSpec(
        graphdef=model_graphdef(c, info),
        task=info.task,
        pixel_mean=float(mean),
        pixel_std=float(std),
        vocab_size=info.vocab_size,
        pad_id=info.pad_id,
        members=c.num_seeds > 1,
    )
    return jit_stats(spec, mesh)


def jit_stats(spec: StatsSpec, mesh) -> Callable:
    """stats_step compiled for `mesh`: sums come back replicated, so every process reads them."""
    return jax.jit(functools.partial(stats_step, spec), out_shardings=sharding.replicated(mesh))


def sample_batch_size(num_examples: int, eval_batch_size: int, mesh) -> int:
    """eval_batch_size, or less for a small sample: a multiple of the batch shards."""
    shards = sharding.num_batch_shards(mesh)
    return min(eval_batch_size, -(-num_examples // shards) * shards)


def collect_stats(stats_fn, state: TrainState, sample: SampleSource, *, batch_size, mesh) -> dict:
    """One pass over the sample; sums stay on device, one fetch, then summarize()."""
    batches = pipeline.create_eval_iterator(
        sample,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    total = None
    for local in batches:
        rows = {"inputs": local["inputs"], "mask": local["mask"]}
        batch = sharding.make_global_batch(rows, sharding.batch_sharding(mesh))
        total = metrics_lib.accumulate(total, stats_fn(state, batch))
    return summarize(jax.device_get(total))


def summarize(sums: dict[str, Any]) -> dict[str, Any]:
    """Host sums -> {"num_examples", "distributions": {name: counts}, "channels"?}."""
    out: dict[str, Any] = {
        "num_examples": int(sums["count"]),
        "distributions": {
            k: np.asarray(v, np.float64).tolist() for k, v in sums.items() if "/" in k
        },
    }
    if "channel_sum" in sums:
        n = max(float(sums["pixels_per_channel"]), 1.0)
        mean = np.asarray(sums["channel_sum"], np.float64) / n
        var = np.maximum(np.asarray(sums["channel_sq"], np.float64) / n - mean**2, 0.0)
        out["channels"] = {"mean": mean.tolist(), "std": np.sqrt(var).tolist()}
    return out


def _proportions(counts: np.ndarray, where: str) -> np.ndarray:
    total = counts.sum()
    if not total > 0:
        raise DataError(f"{where}: the sample is empty")
    p = np.maximum(counts / total, EPS)
    return p / p.sum()


def _top_ids(counts: np.ndarray) -> np.ndarray:
    """The MAX_CATEGORIES - 1 most frequent values (ties: the smaller id)."""
    return np.argsort(-counts, kind="stable")[: MAX_CATEGORIES - 1]


def _pool(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Counts of `ids`, then everything else in one bin."""
    kept = counts[ids]
    return np.append(kept, counts.sum() - kept.sum())


def compact(distribution: list[float]) -> Any:
    """A distribution as the reference stores it: as is, or, with more than MAX_CATEGORIES
    values, {"size", "ids", "counts"}: the most frequent values and the rest pooled."""
    counts = np.asarray(distribution, np.float64)
    if len(counts) <= MAX_CATEGORIES:
        return distribution
    ids = _top_ids(counts)
    return {"size": len(counts), "ids": ids.tolist(), "counts": _pool(counts, ids).tolist()}


def _binned(expected: Any, actual: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, compared) counts over the same bins."""
    a = np.asarray(actual, np.float64)
    if isinstance(expected, dict):
        size, ids = expected["size"], np.asarray(expected["ids"], np.int64)
        e = np.asarray(expected["counts"], np.float64)
    else:
        e = np.asarray(expected, np.float64)
        size, ids = len(e), (_top_ids(e) if len(e) > MAX_CATEGORIES else None)
        e = e if ids is None else _pool(e, ids)
    if len(a) != size:
        raise DataError(f"{where}: {len(a)} values, but the reference has {size}")
    return e, (a if ids is None else _pool(a, ids))


def divergences(expected: Any, actual: Any, where: str = "") -> dict[str, float]:
    """{"psi", "kl"} of the counts `actual` against the reference counts `expected` (a list,
    or compact()'s form)."""
    e, a = _binned(expected, actual, where)
    pe, pa = _proportions(e, f"{where} (reference)"), _proportions(a, where)
    log_ratio = np.log(pa / pe)
    return {"psi": float(np.sum((pa - pe) * log_ratio)), "kl": float(np.sum(pa * log_ratio))}


def compare(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, dict[str, float]]:
    """PSI and KL of every distribution of the reference statistics."""
    out = {}
    for name, expected in reference["distributions"].items():
        if name not in current["distributions"]:
            raise DataError(f"the compared sample has no {name!r}, which the reference has")
        out[name] = divergences(expected, current["distributions"][name], name)
    return out


def drift_scalars(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"drift/NAME/psi", "drift/NAME/kl", "drift/max_psi"} for metrics.jsonl."""
    out = {f"drift/{name}/{k}": v for name, f in figures.items() for k, v in f.items()}
    out["drift/max_psi"] = max(f["psi"] for f in figures.values())
    return out


class DriftMonitor:
    """The validation sample against a train sample at every evaluation (drift/... metrics),
    and at the end the reference statistics of the validation sample (REFERENCE_FILE)."""

    def __init__(self, c: ml_collections.ConfigDict, info: DatasetInfo, mesh):
        n = c.drift.num_examples
        opts = data_options(c)
        self._config, self._info, self._mesh = c, info, mesh
        self._fn = create_stats_fn(c, info, mesh)
        self._batch_size = sample_batch_size(n, c.eval_batch_size, mesh)
        self._train = open_sample(opts, info, "train", n, train=True)
        self._validation = open_sample(opts, info, "validation", n)

    def _stats(self, state: TrainState, sample: SampleSource) -> dict[str, Any]:
        return collect_stats(self._fn, state, sample, batch_size=self._batch_size, mesh=self._mesh)

    def validation_scalars(self, state: TrainState) -> dict[str, float]:
        """drift/... of the validation sample against the train sample, both under `state`."""
        train = self._stats(state, self._train)
        return drift_scalars(compare(train, self._stats(state, self._validation)))

    def write_reference(self, state: TrainState, step: int, path: str, *, write: bool) -> dict:
        """The validation sample's statistics under `state` (checkpoint `step`); written to
        `path` when `write` (process 0)."""
        c, info = self._config, self._info
        reference = {
            "format": FORMAT_VERSION,
            "dataset": c.data.name,
            "split": "validation",
            "task": info.task,
            "input_shape": list(info.input_shape),
            "tokenizer": c.data.tokenizer,
            "seq_len": c.data.seq_len,
            "sample_size": c.drift.num_examples,
            "checkpoint_step": int(step),
            "statistics": self._stats(state, self._validation),
        }
        distributions = reference["statistics"]["distributions"]
        for name, counts in distributions.items():
            distributions[name] = compact(counts)
        if write:
            write_json(path, reference)
        return reference


def read_reference(path: str) -> dict[str, Any]:
    """A run's REFERENCE_FILE; CheckpointError naming the file when missing or unusable."""
    try:
        with open(path) as f:
            reference = json.load(f)
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{path}: no drift reference (training writes it at the end when "
            "drift.num_examples > 0)"
        ) from e
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the drift reference ({e})") from e
    keys = ("format", "dataset", "task", "checkpoint_step", "sample_size", "statistics")
    if not isinstance(reference, dict) or any(k not in reference for k in keys):
        raise CheckpointError(f"{path}: not a drift reference (needs {', '.join(keys)})")
    if reference["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: drift reference format {reference['format']}, expected {FORMAT_VERSION}"
        )
    return reference
