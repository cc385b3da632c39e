"""tiny_mlp_experiment.py with a result it does not reach: `reproduce` must report FAIL."""

import importlib.util
import os

from jaxtrain.expected import Expected

EXPECTED = Expected(
    metric="test/accuracy",
    value=0.9,
    tolerance=0.01,
    hardware="2 CPU cores (x86_64), jax 0.10.2",
)


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mlp_experiment.py")
    spec = importlib.util.spec_from_file_location("tiny_mlp_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
