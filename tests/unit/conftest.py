"""tests/unit needs no prepared data: every test here sees an empty data directory, so a test
that reads a real dataset fails here and belongs in tests/e2e."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx


@pytest.fixture(autouse=True)
def _no_prepared_data(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAXTRAIN_DATA_DIR", str(tmp_path_factory.mktemp("no_data")))


@pytest.fixture(scope="session")
def random_split():
    """(cls, settings) -> (graphdef, params) of cls(settings): the model built abstractly
    (nnx.eval_shape, so no initializer runs: each would compile, ~0.5 s apiece on a small CPU)
    with params drawn N(0, scale) by numpy. For tests of what a model computes, not of its
    init. Cached per (cls, settings, scale, seed)."""
    cache = {}

    def split(cls, settings, *, scale: float = 0.3, seed: int = 0):
        key = (cls, settings, scale, seed)
        if key not in cache:
            abstract_model = nnx.eval_shape(lambda: cls(settings, rngs=nnx.Rngs(params=0)))
            graphdef, abstract = nnx.split(abstract_model, nnx.Param)
            leaves, tree = jax.tree.flatten(abstract)
            rng = np.random.default_rng(seed)
            values = [jnp.asarray(rng.normal(0.0, scale, x.shape), x.dtype) for x in leaves]
            cache[key] = graphdef, jax.tree.unflatten(tree, values)
        return cache[key]

    return split
