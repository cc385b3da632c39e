"""Your own data: CSV/JSONL text and image folders -> TFDS array_record, read back without TF."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxtrain.data.builders import mr_polarity
from jaxtrain.data.builders.user_data import (
    open_user_builder,
    prepare_image_folder,
    prepare_text_dataset,
    read_pixel_stats,
)
from jaxtrain.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FM_DIR = os.path.join(
    os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds")),
    "jaxtrain_fashion_mnist",
    "1.0.0",
)
SPLITS = ("train", "validation", "test")


def _read_all(name: str, data_dir) -> dict[str, list[dict]]:
    builder = open_user_builder(name, str(data_dir))
    out = {}
    for split in SPLITS:
        source = builder.as_data_source(split)
        out[split] = source.__getitems__(list(range(len(source)))) if len(source) else []
    return out


def _write_csv(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _reviews(n: int = 40) -> list[tuple[str, str]]:
    words = ["great", "dull", "fine", "awful", "superb", "long", "moving", "flat"]
    return [
        (f"review {i}: {words[i % 8]} and {words[(i * 3) % 8]}", ["neg", "pos"][i % 2])
        for i in range(n)
    ]


def test_csv_round_trip_sorted_classes_and_stratified_split(tmp_path):
    rows = _reviews(40) + [('he said "wow",\nthen left', "pos"), ("ça va, très bien", "neg")]
    lines = ["id,review,sentiment"] + [
        f'{i},"{t.replace(chr(34), chr(34) * 2)}",{label}' for i, (t, label) in enumerate(rows)
    ]
    path = _write_csv(tmp_path / "reviews.csv", lines)
    prepare_text_dataset(
        "reviews", path, text_column="review", label_column="sentiment", data_dir=str(tmp_path)
    )
    builder = open_user_builder("reviews", str(tmp_path))
    assert builder.info.features["label"].names == ["neg", "pos"]
    # The layout mr_polarity uses, so one text pipeline reads both.
    ours = builder.info.features
    theirs = mr_polarity.MrPolarity(data_dir=str(tmp_path / "mr")).info.features
    for key in ("text", "label"):
        assert type(ours[key]) is type(theirs[key])
        assert ours[key].np_dtype == theirs[key].np_dtype
    data = _read_all("reviews", tmp_path)
    assert [len(data[s]) for s in SPLITS] == [34, 4, 4]  # 21 per class: 17 / 2 / 2
    got = sorted((r["text"].decode("utf-8"), int(r["label"])) for s in SPLITS for r in data[s])
    want = sorted((t, ["neg", "pos"].index(label)) for t, label in rows)
    assert got == want
    for split in ("validation", "test"):
        assert sorted(int(r["label"]) for r in data[split]) == [0, 0, 1, 1]
    assert os.path.isdir(tmp_path / "reviews" / "1.0.0")


def test_split_is_deterministic_in_the_seed(tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["text,label"] + [f"{t},{k}" for t, k in _reviews(40)])

    def validation(name: str, seed: int) -> list[str]:
        prepare_text_dataset(
            name, path, text_column="text", label_column="label", data_dir=str(tmp_path), seed=seed
        )
        return [r["text"] for r in _read_all(name, tmp_path)["validation"]]

    assert validation("a", 0) == validation("b", 0)
    assert validation("a", 0) != validation("c", 1)


def test_jsonl_integer_labels_sort_numerically_and_given_labels_keep_order(tmp_path):
    path = tmp_path / "d.jsonl"
    records = [{"t": f"text {i}", "y": [10, 2, 7][i % 3], "extra": i} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    prepare_text_dataset(
        "ints", str(path), text_column="t", label_column="y", data_dir=str(tmp_path)
    )
    builder = open_user_builder("ints", str(tmp_path))
    assert builder.info.features["label"].names == ["2", "7", "10"]
    data = _read_all("ints", tmp_path)
    by_text = {r["text"].decode(): int(r["label"]) for s in SPLITS for r in data[s]}
    assert by_text["text 0"] == 2 and by_text["text 1"] == 0 and by_text["text 2"] == 1

    prepare_text_dataset(
        "given", str(path), text_column="t", label_column="y", data_dir=str(tmp_path),
        labels=["10", "7", "2"],
    )  # fmt: skip
    assert open_user_builder("given", str(tmp_path)).info.features["label"].names == [
        "10",
        "7",
        "2",
    ]
    with pytest.raises(DataError, match=r"d.jsonl: line 2: label '2' is not one of \['10', '7'\]"):
        prepare_text_dataset(
            "bad", str(path), text_column="t", label_column="y", data_dir=str(tmp_path),
            labels=["10", "7"],
        )  # fmt: skip


def _prepare(path, **kwargs):
    kwargs = {"text_column": "text", "label_column": "label", **kwargs}
    out = path.parent / f"out_{path.stem}"  # one dataset per source: "x" may not change source
    return prepare_text_dataset("x", str(path), data_dir=str(out), **kwargs)


def test_text_bad_input_names_file_and_row(tmp_path):
    ok = [f"{t},{k}" for t, k in _reviews(20)]
    csv_missing = _write_csv(tmp_path / "m.csv", ["body,label", *ok])  # also used below
    with pytest.raises(
        DataError, match=r"m.csv: no column 'text'; the columns are \['body', 'label'\]"
    ):
        _prepare(tmp_path / "m.csv")
    _write_csv(tmp_path / "ragged.csv", ["text,label", *ok[:3], "a,b,pos", *ok[3:]])
    with pytest.raises(DataError, match="ragged.csv: line 5 has 3 fields but the header has 2"):
        _prepare(tmp_path / "ragged.csv")
    _write_csv(tmp_path / "empty.csv", ["text,label", *ok[:2], "  ,neg", *ok[2:]])
    with pytest.raises(DataError, match="empty.csv: line 4 has an empty text"):
        _prepare(tmp_path / "empty.csv")
    _prepare(tmp_path / "empty.csv", skip_empty=True)  # documented: drops the row
    data = _read_all("x", tmp_path / "out_empty")
    assert sum(len(data[s]) for s in SPLITS) == 20
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2\n')
    with pytest.raises(DataError, match="bad.jsonl: line 2 is not valid JSON"):
        _prepare(tmp_path / "bad.jsonl")
    (tmp_path / "nofield.jsonl").write_text('{"text": "a", "label": 1}\n{"txt": "b", "label": 2}\n')
    with pytest.raises(DataError, match=r"nofield.jsonl: line 2 has no field 'text'; its fields"):
        _prepare(tmp_path / "nofield.jsonl")
    (tmp_path / "float.jsonl").write_text('{"text": "a", "label": 1.5}\n')
    with pytest.raises(DataError, match="line 1: label 1.5 must be a string or an integer"):
        _prepare(tmp_path / "float.jsonl")
    _write_csv(tmp_path / "one.csv", ["text,label", "a,pos", "b,pos"])
    with pytest.raises(DataError, match="only one class"):
        _prepare(tmp_path / "one.csv")
    (tmp_path / "data.txt").write_text("a\n")
    with pytest.raises(DataError, match="expected a .csv or .jsonl file"):
        _prepare(tmp_path / "data.txt")
    with pytest.raises(DataError, match="cannot read"):
        _prepare(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="must be 3 fractions"):
        _prepare(tmp_path / "m.csv", split=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="must be 3 fractions"):
        _prepare(tmp_path / "m.csv", split=(0.9, 0.1, 0.0))
    with pytest.raises(DataError, match="lower_snake_case"):
        prepare_text_dataset(
            "My Data", csv_missing, text_column="t", label_column="l", data_dir="d"
        )
    _write_csv(tmp_path / "tiny.csv", ["text,label", "a,pos", "b,neg", "c,pos"])
    with pytest.raises(DataError, match="leave the 'validation' split empty"):
        _prepare(tmp_path / "tiny.csv")


def test_reprepare_is_a_noop_and_a_different_source_is_refused(tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["text,label"] + [f"{t},{k}" for t, k in _reviews(20)])
    kwargs = dict(text_column="text", label_column="label", data_dir=str(tmp_path / "out"))
    directory = prepare_text_dataset("r", path, **kwargs)
    info = os.path.join(directory, "dataset_info.json")
    mtime = os.stat(info).st_mtime_ns
    assert prepare_text_dataset("r", path, **kwargs) == directory
    assert os.stat(info).st_mtime_ns == mtime
    with pytest.raises(DataError, match="already holds a dataset 'r' built from other files"):
        prepare_text_dataset("r", path, seed=1, **kwargs)
    prepare_text_dataset("r", path, seed=1, overwrite=True, **kwargs)
    metadata = json.loads((tmp_path / "out" / "r" / "1.0.0" / "metadata.json").read_text())
    assert metadata["options"]["seed"] == 1


@pytest.fixture(scope="module")
def fm_images():
    """30 real Fashion-MNIST test images, 10 each of classes 0, 1 and 7."""
    source = tfds.builder_from_directory(FM_DIR).as_data_source("test")
    rows = source.__getitems__(list(range(200)))
    picked = {k: [r["image"] for r in rows if r["label"] == k][:10] for k in (0, 1, 7)}
    assert all(len(v) == 10 for v in picked.values())
    return picked


def _write_folder(root, fm_images, names=("tshirt", "trouser", "sneaker")) -> dict[str, list]:
    written = {}
    for name, images in zip(names, fm_images.values(), strict=True):
        os.makedirs(root / name)
        for i, image in enumerate(images):
            Image.fromarray(image[..., 0], mode="L").save(root / name / f"{i:03d}.png")
        written[name] = images
    return written


def test_image_folder_round_trip_with_pixel_stats(tmp_path, fm_images):
    written = _write_folder(tmp_path / "imgs", fm_images)
    directory = prepare_image_folder("clothes", str(tmp_path / "imgs"), data_dir=str(tmp_path))
    builder = open_user_builder("clothes", str(tmp_path))
    assert builder.info.features["label"].names == ["sneaker", "trouser", "tshirt"]
    assert builder.info.features["image"].shape == (28, 28, 1)
    data = _read_all("clothes", tmp_path)
    assert [len(data[s]) for s in SPLITS] == [24, 3, 3]
    names = builder.info.features["label"].names
    got = sorted((names[int(r["label"])], r["image"].tobytes()) for s in SPLITS for r in data[s])
    want = sorted((n, image.tobytes()) for n, images in written.items() for image in images)
    assert got == want  # lossless: PNG -> uint8 -> zlib array_record
    train = np.stack([r["image"] for r in data["train"]]).astype(np.float64) / 255
    mean, std = read_pixel_stats(directory)
    assert mean == pytest.approx(train.mean(), abs=1e-9) and std == pytest.approx(train.std())
    assert builder.info.metadata["pixel_mean"] == pytest.approx(mean)


def test_image_folder_resize_and_color(tmp_path, fm_images):
    root = tmp_path / "imgs"
    _write_folder(root, fm_images, names=("a", "b", "c"))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "a" / "zz_red.jpg")
    with pytest.raises(
        DataError, match=r"zz_red.jpg: 30x40 \(HxW\) differs from .*000.png's 28x28"
    ):
        prepare_image_folder("m", str(root), data_dir=str(tmp_path))
    prepare_image_folder("m", str(root), data_dir=str(tmp_path), image_size=(16, 20))
    builder = open_user_builder("m", str(tmp_path))
    assert builder.info.features["image"].shape == (16, 20, 3)  # one color image -> RGB
    images = np.stack([r["image"] for s in SPLITS for r in _read_all("m", tmp_path)[s]])
    red = images[(images[..., 0].astype(int) - images[..., 1] > 100).all(axis=(1, 2))]
    assert len(red) == 1  # the resized red image kept its color
    prepare_image_folder("g", str(root), data_dir=str(tmp_path), image_size=16, grayscale=True)
    assert open_user_builder("g", str(tmp_path)).info.features["image"].shape == (16, 16, 1)


def test_image_folder_bad_input(tmp_path, fm_images):
    root = tmp_path / "imgs"
    _write_folder(root, fm_images)
    (root / "trouser" / "005.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"trouser/005.png: not a readable image"):
        prepare_image_folder("b", str(root), data_dir=str(tmp_path))
    (root / "trouser" / "005.png").unlink()
    os.makedirs(root / "empty_class")
    with pytest.raises(DataError, match="empty_class: empty class folder"):
        prepare_image_folder("b", str(root), data_dir=str(tmp_path))
    os.rmdir(root / "empty_class")
    (root / "sneaker" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="notes.txt: not an image file"):
        prepare_image_folder("b", str(root), data_dir=str(tmp_path))
    (root / "sneaker" / "notes.txt").unlink()
    (root / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match="stray.png: images must be inside one subfolder per class"):
        prepare_image_folder("b", str(root), data_dir=str(tmp_path))
    with pytest.raises(DataError, match="not a directory"):
        prepare_image_folder("b", str(tmp_path / "nope"), data_dir=str(tmp_path))
    with pytest.raises(DataError, match="image_size"):
        prepare_image_folder("b", str(root), data_dir=str(tmp_path), image_size=(0, 3))
    with pytest.raises(FileNotFoundError, match="is not prepared"):
        open_user_builder("b", str(tmp_path))
    with pytest.raises(DataError, match="no pixel statistics"):
        read_pixel_stats(str(tmp_path))
