"""Reading the user's files for user_data.py: CSV/JSONL text rows and folders of images.

Every error is a DataError naming the file and, for text, the line: missing column (listing the
columns present), ragged CSV row, invalid JSON line, label of the wrong type or not in `labels`,
unreadable image, image of another size, empty class folder, stray file.
"""

import csv
import json
import os
import re

import numpy as np
from PIL import Image

from jaxtrain.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def read_text_rows(path: str, text_column: str, label_column: str) -> list[tuple]:
    """(line number, text, label) per record of a .csv or .jsonl file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".jsonl"):
        raise DataError(f"{path}: expected a .csv or .jsonl file, got {ext or 'no extension'!r}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: tolerate a BOM
            rows = (_read_csv if ext == ".csv" else _read_jsonl)(f, path, text_column, label_column)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); re-save it as UTF-8") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def _read_csv(f, path: str, text_column: str, label_column: str) -> list[tuple]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty file; expected a header row naming the columns")
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(f"{path}: no column {column!r}; the columns are {header}")
    t, k = header.index(text_column), header.index(label_column)
    rows = []
    for record in reader:
        if not record:  # a blank line
            continue
        if len(record) != len(header):
            raise DataError(
                f"{path}: line {reader.line_num} has {len(record)} fields but the header has "
                f"{len(header)}; quote fields that contain commas"
            )
        rows.append((reader.line_num, record[t], record[k]))
    return rows


def _read_jsonl(f, path: str, text_column: str, label_column: str) -> list[tuple]:
    rows = []
    for line_num, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {line_num} is not valid JSON ({e.msg})") from e
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_num} is not a JSON object")
        for column in (text_column, label_column):
            if column not in record:
                raise DataError(
                    f"{path}: line {line_num} has no field {column!r}; its fields are "
                    f"{sorted(record)}"
                )
        text, label = record[text_column], record[label_column]
        if not isinstance(text, str):
            raise DataError(f"{path}: line {line_num}: {text_column!r} must be a string")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(
                f"{path}: line {line_num}: label {label!r} must be a string or an integer"
            )
        rows.append((line_num, text, label))
    return rows


def assign_labels(
    values: list, lines: list[int], path: str, labels: list | None
) -> tuple[list[str], np.ndarray]:
    """(class names, class id per value): `labels` order, else sorted (numerically if ints)."""
    keys = [str(v) for v in values]
    if labels is not None:
        names = [str(label) for label in labels]
        if len(set(names)) != len(names):
            raise DataError(f"labels={list(labels)} has duplicates")
        for key, line in zip(keys, lines, strict=True):
            if key not in names:
                raise DataError(f"{path}: line {line}: label {key!r} is not one of {names}")
    elif all(isinstance(v, int) or _INT_RE.match(v) for v in values):
        names = [str(v) for v in sorted({int(v) for v in values})]
        keys = [str(int(v)) for v in values]  # "07" and 7 are the same class
    else:
        names = sorted(set(keys))
    if len(names) < 2:
        raise DataError(f"{path}: only one class ({names}); a classifier needs at least two")
    index = {name: i for i, name in enumerate(names)}
    return names, np.asarray([index[key] for key in keys], np.int64)


def list_image_folder(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
    """([(file, class id)], class names) from folder/<class>/<file>, in sorted order."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a directory; expected one subfolder per class")
    entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
    stray = [e for e in entries if not os.path.isdir(os.path.join(folder, e))]
    if stray:
        raise DataError(
            f"{os.path.join(folder, stray[0])}: images must be inside one subfolder per class"
        )
    if not entries:
        raise DataError(f"{folder}: no class subfolders")
    files = []
    for label, name in enumerate(entries):
        class_dir = os.path.join(folder, name)
        names = sorted(f for f in os.listdir(class_dir) if not f.startswith("."))
        if not names:
            raise DataError(f"{class_dir}: empty class folder; add images or remove it")
        for file_name in names:
            path = os.path.join(class_dir, file_name)
            if not file_name.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path):
                raise DataError(
                    f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)}); remove it"
                )
            files.append((path, label))
    return files, entries


def parse_image_size(image_size: int | tuple[int, int] | None) -> list[int] | None:
    if image_size is None:
        return None
    size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(d, int) and d > 0 for d in size):
        raise DataError(f"image_size={image_size!r} must be a positive int or (height, width)")
    return size


def _open_image(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is OSError
        raise DataError(f"{path}: not a readable image ({e}); fix or remove it") from e
    return image


def read_images(paths: list[str], size: list[int] | None, grayscale: bool | None) -> np.ndarray:
    """uint8 [N, H, W, C]; all images share a size unless `size` = [H, W] resizes them."""
    images = [_open_image(p) for p in paths]
    if grayscale is None:
        grayscale = all(image.mode in _GRAY_MODES for image in images)
    if size is None:
        width, height = images[0].size
        for path, image in zip(paths, images, strict=True):
            if image.size != (width, height):
                raise DataError(
                    f"{path}: {image.size[1]}x{image.size[0]} (HxW) differs from {paths[0]}'s "
                    f"{height}x{width}; pass image_size=(H, W) to resize all images"
                )
    else:
        height, width = size
    out = np.empty((len(paths), height, width, 1 if grayscale else 3), np.uint8)
    for i, image in enumerate(images):
        image = image.convert("L" if grayscale else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(image, np.uint8).reshape(height, width, -1)
    return out
