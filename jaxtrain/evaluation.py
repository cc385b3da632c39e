"""Evaluation of one split with the compiled eval step, and the data options it reads with.

Sums stay on device over the whole pass; one host fetch at the end.
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from jaxtrain import data as data_lib
from jaxtrain import ensemble
from jaxtrain import metrics as metrics_lib
from jaxtrain.build import resolve_data_dir
from jaxtrain.data.loader import DataOptions, DatasetInfo
from jaxtrain.parallel import sharding
from jaxtrain.step import TrainState


def data_options(c: ml_collections.ConfigDict) -> DataOptions:
    """The data part of the config, unpacked for the data layer."""
    d = c.data
    return DataOptions(
        name=d.name,
        data_dir=resolve_data_dir(d.data_dir),
        validation_size=d.validation_size,
        seed=c.seed,
        prefetch=d.prefetch,
        in_memory=d.in_memory,
        tokenizer=d.tokenizer,
        seq_len=d.seq_len,
        augment_crop_pad=d.augment_crop_pad,
        augment_flip=d.augment_flip,
        sampling=d.sampling,
        packing=d.packing,
    )


def evaluate_split(
    c: ml_collections.ConfigDict, split: str, state: TrainState, eval_fn, mesh, info: DatasetInfo
) -> tuple[dict[str, float], np.ndarray | None]:
    """One pass over a split. Sums stay on device; one fetch at the end.

    Returns the `split/...` scalars and the confusion matrix (None for language modeling).
    """
    batches = data_lib.create_eval_iterator(
        data_options(c),
        split=split,
        global_batch_size=c.eval_batch_size,
        num_classes=info.num_classes,
    )
    total = None
    for i, local in enumerate(batches):
        if c.eval_steps and i == c.eval_steps:
            break  # every process stops at the same batch, so collectives line up
        total = metrics_lib.accumulate(
            total, eval_fn(state, sharding.make_global_batch(local, sharding.batch_sharding(mesh)))
        )
    total = jax.device_get(total)
    seeds = ensemble.member_seeds(c.seed, c.num_seeds)
    if c.num_seeds == 1:
        summary, confusion = _summarize_eval(total)
    else:
        members = [_summarize_eval(t) for t in ensemble.split_members(total, c.num_seeds)]
        summary = ensemble.summarize_members([m[0] for m in members], seeds)
        # The written confusion matrix pools all members' predictions.
        confusion = None if members[0][1] is None else sum(m[1] for m in members)
    return {f"{split}/{k}": v for k, v in summary.items()}, confusion


def _summarize_eval(total: dict[str, Any]) -> tuple[dict[str, float], np.ndarray | None]:
    loss = float(total["loss_sum"] / total["count"])
    summary = {"loss": loss}
    confusion = None
    if "confusion" in total:
        confusion = np.asarray(total["confusion"])
        summary.update(metrics_lib.summarize_confusion(confusion))
    else:
        # Language modeling: per-token loss in nats; perplexity and bits per token follow.
        summary["accuracy"] = float(total["correct"] / total["count"])
        summary["perplexity"] = float(np.exp(min(loss, 50.0)))
        summary["bits_per_token"] = loss / float(np.log(2.0))
    return summary, confusion
