"""The command line: per-command help, one-line errors, quiet logs by default."""

import os
import re
import subprocess
import sys

import pytest

from jaxtrain import cli
from jaxtrain.cli.help import scan

REPO = __file__.rsplit("/tests/", 1)[0]
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.M)


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        cli._parse_flags(["jaxtrain", *args])
    assert e.value.code == 0
    return capsys.readouterr().out


def _listed_flags(help_text: str) -> set[str]:
    return set(re.findall(r"^  (?:-\w, )?--(?:\[no\])?(\w+)", help_text, re.M))


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_command_help_lists_only_its_flags(capsys, command):
    text = _help(capsys, command, "--help")
    assert text.startswith(f"usage: python -m jaxtrain {command} ")
    assert cli.COMMANDS[command].summary in text
    assert _listed_flags(text) == {*cli.COMMANDS[command].flags, "verbosity", "help"}
    assert _help(capsys, command, "-h") == text


def test_sample_help_through_the_real_entry_point(run_cli):
    out = run_cli("sample", "--help", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--prompt" in out.stdout and "The text to continue." in out.stdout
    assert "--grid" not in out.stdout and "--config" not in out.stdout
    assert out.stderr == ""


def test_top_level_help_lists_every_command_with_its_summary(capsys):
    text = _help(capsys, "--help")
    for name, command in cli.COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.summary)}$", text, re.M)
    assert "--verbosity" in text
    assert "--prompt" not in text  # flags belong to the commands' help


# --- one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "train",
                "--config",
                "experiments/fashion_mnist_mlp.py",
                "--workdir",
                "w",
                "--prompt",
                "hi",
            ],  # fmt: skip
            "error: --prompt is not a flag of 'train'; see: python -m jaxtrain train --help",
        ),
        (
            ["eval", "--workdir", "w", "--config.total_steps=3"],
            "error: --config.total_steps is not a flag of 'eval'; "
            "see: python -m jaxtrain eval --help",
        ),
        (["sample", "--noprogress"], "error: --progress is not a flag of 'sample'"),
        (["trian"], "error: unknown command 'trian' (did you mean train?); use one of: train, "),
        (["eval"], "error: --workdir is required; see: python -m jaxtrain eval --help"),
        (["eval", "--workdir", "w", "extra"], "error: 'eval' takes no positional arguments"),
        (["train", "--workdir", "w", "--no_such_flag=1"], "Unknown command line flag"),
    ],
)
def test_bad_command_lines_fail_in_one_line(args, message, run_cli):
    out = run_cli(*args, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert out.stdout == ""


def test_unknown_command_names_every_command(run_cli):
    out = run_cli("frobnicate", timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "'frobnicate'" in out.stderr and all(c in out.stderr for c in cli.COMMANDS)


def test_no_command_shows_the_commands_and_exits_2(run_cli):
    out = run_cli(timeout=60)
    assert out.returncode == 2 and "commands:" in out.stderr and "sweep" in out.stderr


def test_scan_reads_values_like_absl():
    names, positional = scan(
        ["train", "--workdir", "--prompt", "--noprogress", "-v", "1", "--config.a=b", "--", "-x"]
    )
    assert names == ["workdir", "noprogress", "v", "config.a"]  # "--prompt" is the value
    assert positional == ["train", "-x"]


# --- quiet by default ------------------------------------------------------------------------

TINY_TRAIN = [
    "train",
    "--config",
    "experiments/fashion_mnist_mlp.py",
    "--config.total_steps=20",
    "--config.log_every=10",
    "--config.eval_every=10",
    "--config.checkpoint.every=10",
    "--config.optimizer.warmup_steps=0",
    "--config.model.features=(32,)",
    "--progress=false",
]


def test_default_train_shows_only_jaxtrain_lines(tmp_path, run_cli):
    out = run_cli(*TINY_TRAIN, "--workdir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("done: 20 steps") == 1 and len(out.stdout.splitlines()) == 1
    assert not ABSL_PREFIX.search(out.stderr), out.stderr[:3000]
    for noise in ("orbax", "Load dataset info", "checkpoint_manager", "CheckpointManager"):
        assert noise not in out.stderr, out.stderr[:3000]
    assert "params" in out.stderr  # jaxtrain's own header line, without a prefix
    assert len(out.stderr.splitlines()) <= 12, out.stderr


@pytest.mark.parametrize("verbosity", [[], ["--verbosity=1"], ["-v", "1"]])
def test_verbosity_1_shows_other_libraries_info(tmp_path, verbosity, run_cli):
    """A config that fails after the dataset's info is read (by tfds, which logs at INFO)."""
    args = ["train", "--config", "experiments/fashion_mnist_mlp.py", "--workdir",
            str(tmp_path / "r"), "--config.model.num_classes=5", *verbosity]  # fmt: skip
    out = run_cli(*args)
    assert out.returncode == 2 and "num_classes" in out.stderr
    shown = "Load dataset info" in out.stderr and ABSL_PREFIX.search(out.stderr)
    assert bool(shown) == bool(verbosity), out.stderr


LOGGING_SCRIPT = """
import logging, sys
from absl import logging as absl_logging
from jaxtrain.logs import setup_logging
setup_logging(int(sys.argv[1]))
logging.getLogger("jaxtrain.train").info("ours-info")
logging.getLogger("jaxtrain.tools.sweep").warning("ours-warning")
logging.getLogger("orbax").info("their-info")
absl_logging.info("absl-info")
logging.getLogger("grain").warning("their-warning")
logging.getLogger("jax").debug("their-debug")
"""


@pytest.mark.parametrize(
    "verbosity, shown",
    [
        (0, {"ours-info", "ours-warning", "their-warning"}),
        (1, {"ours-info", "ours-warning", "their-warning", "their-info", "absl-info"}),
        (
            2,
            {
                "ours-info",
                "ours-warning",
                "their-warning",
                "their-info",
                "absl-info",
                "their-debug",
            },
        ),  # fmt: skip
    ],
)
def test_log_levels_and_formats(verbosity, shown):
    out = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, str(verbosity)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert {line.rsplit("] ", 1)[-1].removeprefix("warning: ") for line in lines} == shown
    assert lines[:2] == ["ours-info", "warning: ours-warning"]  # jaxtrain's: no absl prefix
    assert all(ABSL_PREFIX.match(line) for line in lines[2:])  # others keep file:line
