"""The one entry point the loop uses for data: dataset info and iterators for any task.

Three tasks, told apart by the dataset (jaxtrain/data/registry.py): image classification
(fashion_mnist, user image folders), text classification (mr_polarity, user CSV/JSONL) and
language modeling (shakespeare, shakespeare_by_work). Every batch is {"inputs", "labels",
"mask"} (see jaxtrain/step.py), plus "segment_ids" and "positions" for packed documents,
read from a source (image_source.py, text_source.py) by the one pipeline (pipeline.py).
"""

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import tokenizers

from jaxtrain.data import image_source, pipeline, registry, sampler, text_source
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.data.registry import IMAGE_CLASSIFICATION, LANGUAGE_MODELING
from jaxtrain.errors import DataError

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
    packing: str = "none"  # language modeling: "documents" packs whole documents into rows


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the step need to know about a dataset, for any task."""

    task: str
    num_classes: int  # 0 for language modeling
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]  # one example: (H, W, C) or (L,)
    input_dtype: Any
    label_shape: tuple[int, ...]  # () for classification, (L,) for language modeling
    num_train: int  # examples, or documents for language modeling
    num_validation: int
    num_test: int
    vocab_size: int = 0  # text: the tokenizer's
    pad_id: int = 0  # text: the tokenizer's padding id
    packed: bool = False  # batches carry segment_ids and positions (data.packing=documents)

    def batch_shapes(self, batch_size: int, sharding: Any = None) -> dict[str, Any]:
        """Abstract global batch (ShapeDtypeStructs) for eval_shape and lowering."""
        b = batch_size
        shapes = {
            "inputs": jax.ShapeDtypeStruct(
                (b, *self.input_shape), self.input_dtype, sharding=sharding
            ),
            "labels": jax.ShapeDtypeStruct((b, *self.label_shape), np.int32, sharding=sharding),
            "mask": jax.ShapeDtypeStruct((b, *self.label_shape), np.float32, sharding=sharding),
        }
        if self.packed:
            for key in ("segment_ids", "positions"):
                shapes[key] = jax.ShapeDtypeStruct(
                    (b, *self.input_shape), np.int32, sharding=sharding
                )
        return shapes


def get_dataset_info(opts: DataOptions) -> DatasetInfo:
    """Reads task, shapes, classes and split sizes from the prepared metadata (no examples)."""
    task = registry.get_task(opts.name, opts.data_dir)
    info = registry.load_builder(opts.name, opts.data_dir).info
    class_names = tuple(info.features["label"].names) if "label" in info.features else ()
    if task == IMAGE_CLASSIFICATION:
        sizes = image_source.image_split_sizes(opts.name, info, opts.validation_size)
        return DatasetInfo(
            task=task,
            num_classes=len(class_names),
            class_names=class_names,
            input_shape=tuple(info.features["image"].shape),
            input_dtype=np.float32,
            label_shape=(),
            num_train=sizes["train"],
            num_validation=sizes["validation"],
            num_test=sizes["test"],
        )
    tokenizer = load_tokenizer(opts.tokenizer, opts.data_dir)
    return DatasetInfo(
        task=task,
        num_classes=len(class_names),
        class_names=class_names,
        input_shape=(opts.seq_len,),
        input_dtype=np.int32,
        label_shape=(opts.seq_len,) if task == LANGUAGE_MODELING else (),
        num_train=info.splits["train"].num_examples,
        num_validation=info.splits["validation"].num_examples,
        num_test=info.splits["test"].num_examples,
        vocab_size=tokenizer_lib.get_vocab_size(tokenizer),
        pad_id=tokenizer_lib.get_pad_id(tokenizer),
        packed=opts.packing != "none",
    )


def create_train_iterator(opts: DataOptions, *, global_batch_size: int, num_classes: int) -> Any:
    """Infinite shuffled per-process train batches; a grain iterator (get_state/set_state)."""
    process_index, process_count = jax.process_index(), jax.process_count()
    # Fail before decoding or tokenizing a split.
    sampler.local_batch_size(
        global_batch_size, process_index=process_index, process_count=process_count
    )
    images = None
    if registry.get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        source = _open_image_source(opts, "train", num_classes)
        images = _image_options(opts)
    elif opts.sampling != "uniform" or opts.augment_crop_pad or opts.augment_flip:
        raise DataError(
            "data.sampling=balanced and image augmentation apply to image datasets; for text "
            "use loss.class_weighting=balanced"
        )
    else:
        source = _open_text_source(opts, "train", num_classes, train=True)
    return pipeline.create_train_iterator(
        source,
        global_batch_size=global_batch_size,
        seed=opts.seed,
        process_index=process_index,
        process_count=process_count,
        prefetch=opts.prefetch,
        sampling=opts.sampling,
        images=images,
    )


def create_eval_iterator(
    opts: DataOptions, *, split: str, global_batch_size: int, num_classes: int
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over `split` ("validation" or "test"), padded with mask-0 rows."""
    process_index, process_count = jax.process_index(), jax.process_count()
    sampler.local_batch_size(
        global_batch_size, process_index=process_index, process_count=process_count
    )
    images = None
    if registry.get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        if split not in image_source.EVAL_SPLITS:
            raise DataError(f"split must be one of {image_source.EVAL_SPLITS}, got {split!r}")
        source = _open_image_source(opts, split, num_classes)
        images = _image_options(opts)
    else:
        source = _open_text_source(opts, split, num_classes, train=False)
    return pipeline.create_eval_iterator(
        source,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        images=images,
    )


def train_class_counts(opts: DataOptions, num_classes: int) -> np.ndarray:
    """Examples per class in the train split (for balanced class weights and resampling)."""
    if registry.get_task(opts.name, opts.data_dir) == IMAGE_CLASSIFICATION:
        labels = _open_image_source(opts, "train", num_classes, in_memory=True).labels()
    else:
        labels = text_source.read_labels(opts.name, "train", opts.data_dir)
    return np.bincount(labels, minlength=num_classes)


def load_tokenizer(spec: str, data_dir: str) -> tokenizers.Tokenizer:
    """A tokenizer.json path or a named tokenizer (NAMED_TOKENIZERS), loaded once per process."""
    if not spec:
        raise DataError(
            "config.data.tokenizer is empty: text datasets need a tokenizer.json path "
            f"or one of {', '.join(NAMED_TOKENIZERS)}"
        )
    return _load_tokenizer_cached(spec, os.path.abspath(data_dir))


def train_tokenizer_on_corpus(
    kind: str, corpus: str, vocab_size: int, out: str, *, data_dir: str, min_frequency: int = 2
) -> dict[str, Any]:
    """`tokenizer train`: trains on a text dataset's train split or a UTF-8 text file (one
    document), saves tokenizer.json at `out` and returns a summary for the log."""
    start = time.perf_counter()
    tokenizer_lib.check_tokenizer_settings(kind, vocab_size)  # before reading the corpus
    texts = text_source.read_corpus(corpus, data_dir)
    tokenizer, stats = tokenizer_lib.fit_tokenizer(
        kind, texts, vocab_size=vocab_size, min_frequency=min_frequency
    )
    tokenizer_lib.save_tokenizer(tokenizer, out)
    return {
        "kind": kind,
        "corpus": corpus,
        "out": out,
        "vocab_size": tokenizer_lib.get_vocab_size(tokenizer),
        "pad_id": tokenizer_lib.get_pad_id(tokenizer),
        **stats,
        "seconds": round(time.perf_counter() - start, 3),
    }


@functools.lru_cache(maxsize=8)
def _load_tokenizer_cached(spec: str, data_dir: str) -> tokenizers.Tokenizer:
    if spec == "shakespeare_char":
        path = os.path.join(data_dir, "tokenizers", "shakespeare_char.json")
        if not os.path.exists(path):
            # Deterministic: every distinct character of the prepared train split (vocab 0: all).
            texts = text_source.read_corpus("shakespeare", data_dir)
            tokenizer_lib.train_tokenizer("char", texts, vocab_size=0, out_path=path)
        return tokenizer_lib.load_tokenizer(path)
    return tokenizer_lib.resolve_tokenizer(spec, data_dir=data_dir)


def _open_image_source(
    opts: DataOptions, split: str, num_classes: int, in_memory: bool | None = None
) -> pipeline.Source:
    return image_source.open_image_source(
        opts.name,
        split,
        data_dir=opts.data_dir,
        validation_size=opts.validation_size,
        num_classes=num_classes,
        in_memory=opts.in_memory if in_memory is None else in_memory,
    )


def _open_text_source(
    opts: DataOptions, split: str, num_classes: int, *, train: bool
) -> pipeline.Source:
    return text_source.open_text_source(
        opts.name,
        split,
        data_dir=opts.data_dir,
        tokenizer=load_tokenizer(opts.tokenizer, opts.data_dir),
        seq_len=opts.seq_len,
        train=train,
        num_classes=num_classes or None,
        packing=opts.packing,
    )


def _image_options(opts: DataOptions) -> pipeline.ImageOptions:
    mean, std = registry.pixel_stats(opts.name, opts.data_dir)
    return pipeline.ImageOptions(
        pixel_mean=mean,
        pixel_std=std,
        augment_crop_pad=opts.augment_crop_pad,
        augment_flip=opts.augment_flip,
    )
