"""Image augmentation for the grain pipeline: random crop with zero padding and horizontal flip.

Randomness is a pure function of (seed, batch_index, global row): a numpy Generator is derived
from `np.random.SeedSequence([seed, batch_index])` and draws one row of random numbers per example
of the global batch, in global-row order. Hence
- a resumed run (grain iterator state restored, so the same batch indices) augments exactly as an
  uninterrupted one, and
- any number of processes, each augmenting its own rows (`row_offset` = its first global row),
  produce the same global batch as one process.

Letters: B batch (local rows), H/W spatial, C channels, P padding.
"""

import grain
import numpy as np


def draw_augment_params(
    *, seed: int, batch_index: int, row_offset: int, rows: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop offsets (dy, dx in [0, 2P]) and flip flags for global rows [row_offset, +rows).

    Draws uniforms for every global row up to the last one needed and keeps this process's rows:
    each row's numbers depend only on its global position, whatever the process count.
    """
    if seed < 0 or batch_index < 0 or row_offset < 0:
        raise ValueError(
            f"seed, batch_index and row_offset must be >= 0, got {seed}, {batch_index}, "
            f"{row_offset}"
        )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, batch_index])))
    # One float64 per value consumes the stream in order, so the first n rows of a larger draw
    # equal a draw of n rows: the prefix property the process split relies on.
    u_Nx3 = rng.random((row_offset + rows, 3))[row_offset:]
    offsets = np.floor(u_Nx3[:, :2] * (2 * pad + 1)).astype(np.int64)
    return offsets[:, 0], offsets[:, 1], u_Nx3[:, 2] < 0.5


def augment_batch(
    images_BxHxWxC: np.ndarray,
    *,
    seed: int,
    batch_index: int,
    row_offset: int = 0,
    pad: int,
    flip: bool,
    fill: float = 0,
) -> np.ndarray:
    """Pads by `pad` pixels of `fill`, crops back to HxW at a random offset, maybe flips left-right.

    `images_BxHxWxC` are this process's rows of global batch `batch_index`, starting at global
    row `row_offset`. Returns a new array of the same shape and dtype. Pad with `fill` = 0 on raw
    pixels (black), before normalisation.
    """
    if images_BxHxWxC.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images_BxHxWxC.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, h, w, _ = images_BxHxWxC.shape
    dy, dx, flips = draw_augment_params(
        seed=seed, batch_index=batch_index, row_offset=row_offset, rows=b, pad=pad
    )
    if pad > 0:
        padded = np.pad(
            images_BxHxWxC,
            ((0, 0), (pad, pad), (pad, pad), (0, 0)),
            mode="constant",
            constant_values=np.asarray(fill, images_BxHxWxC.dtype),
        )
        out = np.empty_like(images_BxHxWxC)
        # A loop over examples with slicing: each copy is one contiguous window, cheap next to
        # the train step; fancy indexing over all pixels would allocate index arrays B*H*W big.
        for i in range(b):
            out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    else:
        out = images_BxHxWxC.copy()
    if flip:
        out[flips] = out[flips, :, ::-1]
    return out


class AugmentImages(grain.transforms.MapWithIndex):
    """`MapDataset.map_with_index` transform: augments `batch[key]` of global batch `index`.

    Place it on the batched MapDataset (before `to_iter_dataset`), where the index is the global
    batch number, so the iterator's checkpointed position fixes the augmentation.
    """

    def __init__(
        self,
        *,
        seed: int,
        row_offset: int,
        pad: int,
        flip: bool,
        key: str = "inputs",
        fill: float = 0,
    ):
        self._seed = seed
        self._row_offset = row_offset
        self._pad = pad
        self._flip = flip
        self._key = key
        self._fill = fill

    def map_with_index(self, index: int, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = augment_batch(
            element[self._key],
            seed=self._seed,
            batch_index=index,
            row_offset=self._row_offset,
            pad=self._pad,
            flip=self._flip,
            fill=self._fill,
        )
        return {**element, self._key: images}
