"""The registries are the only lists: a model family or a dataset added to its registry (and
nowhere else) is accepted by config validation and trains end to end."""

import dataclasses
import math
import os

import jax
import pytest
from flax import nnx

from jaxtrain.config import get_config
from jaxtrain.data import registry as data_registry
from jaxtrain.errors import ConfigError
from jaxtrain.models import registry as model_registry
from jaxtrain.models import settings as S
from jaxtrain.train import train_and_evaluate
from jaxtrain.validation import validate_config


@dataclasses.dataclass(frozen=True)
class LinearSettings:
    """A family written the way docs/adding_a_model.md says: settings + module + one line."""

    num_classes: int = 10
    scale: float = 1.0
    in_shape: tuple[int, ...] = S.dataset_field("input_shape", (28, 28, 1))

    def __post_init__(self):
        S.check(self.scale > 0, "scale", f"must be > 0, got {self.scale}")


class Linear(nnx.Module):
    def __init__(self, s: LinearSettings, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(math.prod(s.in_shape), s.num_classes, rngs=rngs)
        self.scale = s.scale

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool, dropout_key: jax.Array):
        return self.dense(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1) * self.scale)


@pytest.fixture
def linear_family(monkeypatch):
    family = model_registry.ModelFamily(LinearSettings, Linear, model_registry.IMAGES)
    monkeypatch.setitem(model_registry.MODELS, "linear", family)


def test_a_registered_family_validates_and_names_its_fields(linear_family):
    c = get_config()
    c.model = model_registry.model_config("linear", scale=0.5)
    validate_config(c, num_devices=1)
    c.model.scale = -1.0
    with pytest.raises(ConfigError, match=r"config.model.scale: must be > 0, got -1.0"):
        validate_config(c, num_devices=1)


def test_an_unregistered_family_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="'linear' is not one of mlp, cnn, resnet, gpt, bert"):
        model_registry.model_config("linear")


def test_a_registered_family_and_dataset_train_end_to_end(
    linear_family, monkeypatch, tmp_path, data_dir
):
    # A dataset entry under a new name (here: the Fashion-MNIST builder again) is all that
    # config validation and the pipeline need.
    monkeypatch.setitem(
        data_registry.DATASETS, "fmnist_again", data_registry.DATASETS["fashion_mnist"]
    )
    c = get_config()
    c.data.name, c.data.data_dir = "fmnist_again", data_dir
    c.model = model_registry.model_config("linear")
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = 6, 3, 6, 2
    c.batch_size, c.eval_batch_size = 32, 500
    result = train_and_evaluate(c, str(tmp_path / "run"), progress=False)
    assert math.isfinite(result.metrics["train/loss"])
    assert 0.0 <= result.metrics["test/accuracy"] <= 1.0
    assert result.eval_steps == 2


def test_an_unregistered_dataset_is_refused_with_the_valid_names():
    c = get_config()
    c.data.name = "cifar10"
    with pytest.raises(ConfigError, match="config.data.name: unknown dataset 'cifar10'"):
        validate_config(c, num_devices=1)
    c.data.name = "shakespeare_by_work"  # in the registry: accepted (it was refused before)
    validate_config(c, num_devices=1)


def test_the_docs_name_every_registered_model_dataset_and_weights():
    """docs/ lists what the registries hold; a new entry without its docs line fails here."""
    from jaxtrain.models.pretrained import PRETRAINED

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "docs", "training.md")) as f:
        models_doc = f.read()
    with open(os.path.join(repo, "docs", "data.md")) as f:
        data_doc = f.read()
    for name in model_registry.model_names():
        assert f"`{name}`" in models_doc, f"docs/training.md does not name model {name!r}"
    for name in (*data_registry.dataset_names(), *PRETRAINED):
        assert f"`{name}`" in data_doc, f"docs/data.md does not name {name!r}"
