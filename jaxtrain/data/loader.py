"""The one entry point the loop uses for data: dataset info and iterators for any task.

Three tasks, told apart by the dataset: image classification (fashion_mnist, user image
folders), text classification (mr_polarity, user CSV/JSONL) and language modeling
(shakespeare). Every batch is {"inputs", "labels", "mask"} (see jaxtrain/step.py); image
batches come from jaxtrain/data/pipeline.py, text batches from jaxtrain/data/text.py.
"""

import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxtrain.data import pipeline
from jaxtrain.errors import DataError

IMAGE_CLASSIFICATION = "image_classification"
TEXT_CLASSIFICATION = "text_classification"
LANGUAGE_MODELING = "language_modeling"

# Tokenizers an experiment can name instead of a tokenizer.json path.
NAMED_TOKENIZERS = ("minilm", "shakespeare_char")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The data part of a config, unpacked at the edge (train.py)."""

    name: str
    data_dir: str
    validation_size: int = 5000  # images: carved from the end of train; text: builder splits
    seed: int = 0
    prefetch: int = 2
    in_memory: bool = True
    tokenizer: str = ""
    seq_len: int = 128
    augment_crop_pad: int = 0
    augment_flip: bool = False
    sampling: str = "uniform"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the step need to know about a dataset, for any task."""

    task: str
    num_classes: int  # 0 for language modeling
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]  # one example: (H, W, C) or (L,)
    input_dtype: Any
    label_shape: tuple[int, ...]  # () for classification, (L,) for language modeling
    num_train: int
    num_validation: int
    num_test: int
    vocab_size: int = 0  # text: the tokenizer's
    pad_id: int = 0  # text: the tokenizer's padding id

    def batch_shapes(self, batch_size: int, sharding: Any = None) -> dict[str, Any]:
        """Abstract global batch (ShapeDtypeStructs) for eval_shape and lowering."""
        b = batch_size
        return {
            "inputs": jax.ShapeDtypeStruct(
                (b, *self.input_shape), self.input_dtype, sharding=sharding
            ),
            "labels": jax.ShapeDtypeStruct((b, *self.label_shape), np.int32, sharding=sharding),
            "mask": jax.ShapeDtypeStruct((b, *self.label_shape), np.float32, sharding=sharding),
        }


def _text():
    # Imported on first use: image-only runs never load the tokenizers stack.
    from jaxtrain.data import text

    return text


def get_task(name: str, data_dir: str = "") -> str:
    """The task of a dataset name, from its builder (no examples read).

    Own data (`user:NAME`) is image classification when it has an "image" feature, else text
    classification.
    """
    if name in pipeline.DATASETS:
        return IMAGE_CLASSIFICATION
    if pipeline.is_user_dataset(name):
        features = pipeline._load_builder(name, data_dir).info.features
        return IMAGE_CLASSIFICATION if "image" in features else TEXT_CLASSIFICATION
    text = _text()
    if name in text.TEXT_DATASETS:
        return text.TEXT_DATASETS[name].task
    raise DataError(
        f"unknown dataset {name!r}; valid: {', '.join([*pipeline.DATASETS, *text.TEXT_DATASETS])}"
    )


def load_tokenizer(spec: str, data_dir: str):
    """A tokenizer.json path or a named tokenizer (NAMED_TOKENIZERS), loaded once per process."""
    if not spec:
        raise DataError(
            "config.data.tokenizer is empty: text datasets need a tokenizer.json path "
            f"or one of {', '.join(NAMED_TOKENIZERS)}"
        )
    return _load_tokenizer_cached(spec, os.path.abspath(data_dir))


@functools.lru_cache(maxsize=8)
def _load_tokenizer_cached(spec: str, data_dir: str):
    from jaxtrain.data import tokenizer as tok

    if spec == "shakespeare_char":
        path = os.path.join(data_dir, "tokenizers", "shakespeare_char.json")
        if not os.path.exists(path):
            # Deterministic: every distinct character of the prepared train split.
            tok.tokenizer_train_main("char", "shakespeare", 0, path, data_dir=data_dir)  # 0: all
        return tok.load_tokenizer(path)
    return tok.resolve_tokenizer(spec, data_dir=data_dir)


def get_dataset_info(opts: DataOptions) -> DatasetInfo:
    task = get_task(opts.name, opts.data_dir)
    if task == IMAGE_CLASSIFICATION:
        info = pipeline.get_dataset_info(opts.name, opts.data_dir, opts.validation_size)
        return DatasetInfo(
            task=task,
            num_classes=info.num_classes,
            class_names=info.class_names,
            input_shape=tuple(info.image_shape),
            input_dtype=np.float32,
            label_shape=(),
            num_train=info.num_train,
            num_validation=info.num_validation,
            num_test=info.num_test,
        )
    info = _text().get_text_dataset_info(opts.name, opts.data_dir)
    tokenizer = load_tokenizer(opts.tokenizer, opts.data_dir)
    from jaxtrain.data import tokenizer as tok

    return DatasetInfo(
        task=task,
        num_classes=info.num_classes,
        class_names=tuple(info.class_names),
        input_shape=(opts.seq_len,),
        input_dtype=np.int32,
        label_shape=(opts.seq_len,) if task == LANGUAGE_MODELING else (),
        num_train=info.num_train,
        num_validation=info.num_validation,
        num_test=info.num_test,
        vocab_size=tok.get_vocab_size(tokenizer),
        pad_id=tok.get_pad_id(tokenizer),
    )


def create_train_iterator(opts: DataOptions, *, global_batch_size: int, num_classes: int) -> Any:
    """Infinite shuffled per-process train batches; a grain iterator (get_state/set_state)."""
    if get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        return pipeline.create_train_iterator(
            opts.name,
            data_dir=opts.data_dir,
            validation_size=opts.validation_size,
            global_batch_size=global_batch_size,
            seed=opts.seed,
            num_classes=num_classes,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            prefetch=opts.prefetch,
            in_memory=opts.in_memory,
            augment_crop_pad=opts.augment_crop_pad,
            augment_flip=opts.augment_flip,
            sampling=opts.sampling,
        )
    if opts.sampling != "uniform" or opts.augment_crop_pad or opts.augment_flip:
        raise DataError(
            "data.sampling=balanced and image augmentation apply to image datasets; for text "
            "use loss.class_weighting=balanced"
        )
    return _text().create_text_train_iterator(
        opts.name,
        data_dir=opts.data_dir,
        tokenizer=load_tokenizer(opts.tokenizer, opts.data_dir),
        seq_len=opts.seq_len,
        global_batch_size=global_batch_size,
        seed=opts.seed,
        num_classes=num_classes or None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        prefetch=opts.prefetch,
    )


def create_eval_iterator(
    opts: DataOptions, *, split: str, global_batch_size: int, num_classes: int
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over `split` ("validation" or "test"), padded with mask-0 rows."""
    if get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        return pipeline.create_eval_iterator(
            opts.name,
            split=split,
            data_dir=opts.data_dir,
            validation_size=opts.validation_size,
            global_batch_size=global_batch_size,
            num_classes=num_classes,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            in_memory=opts.in_memory,
        )
    return _text().create_text_eval_iterator(
        opts.name,
        split=split,
        data_dir=opts.data_dir,
        tokenizer=load_tokenizer(opts.tokenizer, opts.data_dir),
        seq_len=opts.seq_len,
        global_batch_size=global_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_classes=num_classes or None,
    )


def train_class_counts(opts: DataOptions, num_classes: int) -> np.ndarray:
    """Examples per class in the train split (for balanced class weights and resampling)."""
    if get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        labels = pipeline.train_labels(opts.name, opts.data_dir, opts.validation_size, num_classes)
    else:
        labels = _text().read_labels(opts.name, "train", opts.data_dir)
    return np.bincount(labels, minlength=num_classes)


def prepare_dataset(name: str, data_dir: str, manual_dir: str | None = None) -> None:
    """Builds a built-in dataset (image or text) under data_dir; a no-op when already built."""
    if name in pipeline.DATASETS:
        pipeline.prepare_dataset(name, data_dir, manual_dir)
    elif name in _text().TEXT_DATASETS:
        _text().TEXT_DATASETS[name].prepare(data_dir, manual_dir)
    else:
        valid = [*pipeline.DATASETS, *_text().TEXT_DATASETS]
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(valid)}")
