"""Config validation and the CLI's handling of bad configs."""

import glob
import importlib.util
import os

import pytest

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config, model_names
from jaxtrain.validation import validate_config, warmup_steps

REPO = __file__.rsplit("/tests/", 1)[0]


def test_base_config_is_valid():
    validate_config(get_config(), num_devices=8)


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))), ids=os.path.basename
)
def test_every_experiment_file_is_a_valid_config(path):
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    validate_config(module.get_config(), num_devices=1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("total_steps", 0, "config.total_steps: must be > 0"),
        ("batch_size", 100, "config.batch_size: 100 is not divisible"),
        ("eval_batch_size", 1001, "config.eval_batch_size: 1001 is not divisible"),
        ("optimizer.name", "adamax", "config.optimizer.name: 'adamax' is not one of"),
        ("optimizer.schedule", "cosine_warmup_10p", "config.optimizer.schedule"),
        ("optimizer.learning_rate", -1.0, "config.optimizer.learning_rate: must be > 0"),
        ("optimizer.warmup_steps", -1, "config.optimizer.warmup_steps: must be >= 0"),
        ("eval_steps", -1, "config.eval_steps: must be >= 0"),
        ("model.features", (), "config.model.features: must name at least one width"),
        ("model.hidden", 0, "config.model.hidden: must be > 0"),
        ("optimizer.grad_accum_steps", 0, "config.optimizer.grad_accum_steps: must be >= 1"),
        ("model.name", "resnet9000", "config.model.name"),
        ("model.init", "orthogonal", "config.model.init"),
        ("model.dropout", 1.0, "config.model.dropout"),
        ("loss.label_smoothing", 1.5, "config.loss.label_smoothing"),
        ("optimizer.ema_decay", 1.0, "config.optimizer.ema_decay: must be in .0, 1. .0: off"),
        ("optimizer.ema_decay", -0.1, "config.optimizer.ema_decay: must be in .0, 1. .0: off"),
        ("optimizer.name", "Muon", "config.optimizer.name: 'Muon' is not one of .*muon"),
        ("profile.start_step", -1, "config.profile.start_step: must be >= 0"),
        ("profile.num_steps", -2, "config.profile.num_steps: must be >= 0"),
        (
            "profile.num_steps",
            991,
            "config.profile.start_step: the trace would cover steps "
            "11..1001, beyond total_steps=1000",
        ),
    ],
)
def test_impossible_values_name_the_field(field, value, message):
    c = get_config()
    node, _, leaf = field.rpartition(".")
    (c[node] if node else c)[leaf] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(c, num_devices=8)


def test_warmup_longer_than_the_run_is_clipped_with_one_warning():
    c = get_config()
    c.total_steps, c.optimizer.warmup_steps = 30, 200
    validate_config(c, num_devices=8)  # a smoke run is not refused
    assert warmup_steps(c) == (
        29,
        "optimizer.warmup_steps=200 is not shorter than total_steps=30; clipped to 29",
    )
    c.optimizer.warmup_steps = 10
    assert warmup_steps(c) == (10, "")


def test_model_fields_belong_to_the_family():
    c = get_config()
    c.model.name = "mlp"  # the cnn's fields (conv_impl, convs_per_stage) are not the mlp's
    with pytest.raises(ConfigError, match=r"model 'mlp' has no field 'conv_impl'"):
        validate_config(c, num_devices=8)
    c.model = model_config("mlp", features=(64,))
    validate_config(c, num_devices=8)
    with pytest.raises(ConfigError, match="config.model.name: model 'cnn' has no field 'd_model'"):
        model_config("cnn", d_model=64)
    with pytest.raises(ConfigError, match="config.model.name: 'vit9' is not one of mlp, cnn"):
        model_config("vit9")


def test_every_registered_family_validates_its_defaults():
    for name in model_names():
        c = get_config()
        c.model = model_config(name)
        validate_config(c, num_devices=8)


def test_pretrained_weights_must_fit_the_family():
    c = get_config()
    c.model = model_config("bert", pretrained="bert-huge")
    with pytest.raises(ConfigError, match="config.model.pretrained: 'bert-huge' is not one of"):
        validate_config(c, num_devices=8)


def test_batch_must_divide_devices_times_accumulation():
    c = get_config()
    c.batch_size, c.optimizer.grad_accum_steps = 64, 16
    with pytest.raises(ConfigError, match="8 x 16"):
        validate_config(c, num_devices=8)


def test_config_is_locked():
    c = get_config()
    c.lock()
    with pytest.raises(AttributeError):
        c.optimizer.learnin_rate = 0.1


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.optimizer.learnin_rate=0.1", "learnin_rate"),
        ("--config.total_steps=abc", "total_steps"),
        ("--config.total_steps=0", "config.total_steps: must be > 0"),
        ("--config.optimizer.grad_accum_steps=3", "config.batch_size: 128 is not divisible"),
    ],
)
def test_cli_rejects_bad_config_before_compiling(tmp_path, override, expected, run_cli):
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_cnn.py",
        "--workdir",
        str(tmp_path / "run"),
        override,
    )
    assert out.returncode != 0
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_rejects_unknown_command_and_missing_workdir(run_cli):
    out = run_cli("trian")
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr
    out = run_cli("train", "--config", "experiments/fashion_mnist_cnn.py")
    assert out.returncode == 2 and "--workdir is required" in out.stderr


def test_cli_missing_config_file(tmp_path, run_cli):
    out = run_cli(
        "train", "--config", "experiments/no_such_experiment.py", "--workdir", str(tmp_path)
    )
    assert out.returncode == 2
    assert "--config experiments/no_such_experiment.py: no such file" in out.stderr
    assert "Traceback" not in out.stderr
