"""Class imbalance on a deliberately imbalanced real subset: weights raise macro-F1.

The subset is real Fashion-MNIST at 20:1:1 (Shirt as the majority; T-shirt and Coat, each easily
confused with it, as minorities), written as PNG folders and prepared with
`prepare user_images`, so the run goes through the real own-data TFDS path.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxtrain.config import get_config
from jaxtrain.data import read_image_split
from jaxtrain.data.builders.user_data import prepare_image_folder
from jaxtrain.metrics import balanced_class_weights
from jaxtrain.models import model_config
from jaxtrain.train import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
COUNTS = {6: 3000, 0: 150, 4: 150}  # class id in Fashion-MNIST -> images kept


@pytest.fixture(scope="module")
def imbalanced_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imbalanced")
    images, labels = read_image_split(
        "fashion_mnist", "train", data_dir=FMNIST_DIR, validation_size=0, num_classes=10
    )
    for label, count in COUNTS.items():
        folder = root / "images" / f"class_{label}"
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:count]):
            Image.fromarray(images[index][..., 0]).save(folder / f"{i:04d}.png")
    data_dir = root / "tfds"
    prepare_image_folder(
        "imbalanced", str(root / "images"), data_dir=str(data_dir), split=(0.5, 0.1, 0.4)
    )
    return str(data_dir)


def _run(data_dir, workdir, **loss):
    c = get_config()
    c.data.name, c.data.data_dir = "user:imbalanced", data_dir
    c.model = model_config("mlp", num_classes=3, features=(64,))
    c.model.norm, c.model.dropout = "none", 0.0
    c.total_steps, c.batch_size, c.eval_batch_size = 40, 64, 256
    c.log_every, c.eval_every = 20, 40
    c.optimizer.learning_rate = 1e-3
    for key, value in loss.items():
        node, _, leaf = key.rpartition(".")
        c[node][leaf] = value
    return train_and_evaluate(c, workdir, progress=False).metrics


def test_balanced_class_weights_raise_macro_f1(imbalanced_dir, tmp_path):
    plain = _run(imbalanced_dir, str(tmp_path / "plain"))
    weighted = _run(imbalanced_dir, str(tmp_path / "w"), **{"loss.class_weighting": "balanced"})
    resampled = _run(imbalanced_dir, str(tmp_path / "r"), **{"data.sampling": "balanced"})
    # Plain training mostly predicts the majority class; weights and resampling recover the
    # minority classes, which macro-F1 (unlike accuracy) counts equally.
    assert weighted["test/f1_macro"] > plain["test/f1_macro"] + 0.03
    assert resampled["test/f1_macro"] > plain["test/f1_macro"] + 0.03
    per_class = json.loads((tmp_path / "w" / "eval" / "confusion_test_step40.json").read_text())[
        "per_class"
    ]
    assert set(per_class) == {"class_0", "class_4", "class_6"}
    assert per_class["class_4"]["support"] == 60 and per_class["class_6"]["support"] == 1200


def test_balanced_weights_formula():
    np.testing.assert_allclose(
        balanced_class_weights(np.array([600, 30, 30])), [660 / 1800, 660 / 90, 660 / 90]
    )
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        balanced_class_weights(np.array([5, 0]))
