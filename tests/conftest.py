"""Test setup shared by tests/unit (synthetic data) and tests/e2e (real prepared data).

Devices: one CPU device by default, which keeps every compiled step small. Tests that need a
real mesh are marked `multidevice` and run in their own pytest session with 8 fake CPU devices
(`JAXTRAIN_TEST_DEVICES=8 pytest -m multidevice`; `make test` runs both sessions). In a session
without 8 devices they are deselected, and the summary says so and how to run them.

Compile cache: one persistent XLA cache per pytest session, in a temporary directory shared by
its xdist workers. Repeated programs (the same tiny configs in many tests and in the CLI runs
they start) compile once per session, and nothing leaks between sessions or into ~/.cache.
"""

import os
import shutil
import tempfile

import pytest
from forked_cli import ForkedCLI, cpu_seconds

DEVICES = int(os.environ.get("JAXTRAIN_TEST_DEVICES", "1"))
_SESSION_CACHE_VAR = "JAXTRAIN_TEST_SESSION_CACHE"
MULTIDEVICE = 8

# Must be set before jax initializes its backend (i.e. before any test imports jax).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One cache per pytest session, shared by its xdist workers (they compile many of the same tiny
# programs; JAX's size-bounded cache locks every read and write, see compile_cache.MAX_BYTES).
# The controlling process makes it before the workers start (they inherit the environment) and
# is the only one to remove it, after every worker has finished.
_OWNS_CACHE = "PYTEST_XDIST_WORKER" not in os.environ
if _OWNS_CACHE:
    _CACHE_DIR = tempfile.mkdtemp(prefix="jaxtrain-test-xla-")
    os.environ[_SESSION_CACHE_VAR] = _CACHE_DIR
else:
    _CACHE_DIR = os.environ[_SESSION_CACHE_VAR]
os.environ["JAXTRAIN_COMPILE_CACHE"] = _CACHE_DIR  # read by config.compile_cache_dir="auto"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
_deselected: list[str] = []


def pytest_collection_modifyitems(config, items):
    if DEVICES >= MULTIDEVICE:
        return
    keep = []
    for item in items:
        (_deselected if item.get_closest_marker("multidevice") else keep).append(item)
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    """With $JAXTRAIN_TEST_CPU_LOG set, appends each test's CPU seconds (its process and the
    subprocesses it waited for; setup and teardown included) to that file: a load-independent
    measure of what a test costs on a shared machine."""
    log = os.environ.get("JAXTRAIN_TEST_CPU_LOG")
    start = cpu_seconds() if log else 0.0
    yield
    if log:
        with open(log, "a") as f:
            f.write(f"{cpu_seconds() - start:.2f}\t{item.nodeid}\n")


def pytest_terminal_summary(terminalreporter):
    if _deselected:
        terminalreporter.write_line(
            f"{len(_deselected)} multidevice tests need {MULTIDEVICE} devices and were not run "
            f"in this {DEVICES}-device session; run them with "
            "JAXTRAIN_TEST_DEVICES=8 pytest -m multidevice (make test runs both)"
        )


def pytest_unconfigure(config):
    if _OWNS_CACHE:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The prepared TFDS data (make data)."""
    return DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache():
    """Turns on the session's compile cache for steps compiled outside train_and_evaluate."""
    from jaxtrain.parallel.compile_cache import enable_compilation_cache

    enable_compilation_cache(_CACHE_DIR)
    yield


def _data_dir_env() -> str:
    # tests/unit points JAXTRAIN_DATA_DIR at an empty directory; e2e at the prepared data.
    return os.environ.get("JAXTRAIN_DATA_DIR", DATA_DIR)


@pytest.fixture(scope="session")
def run_cli() -> ForkedCLI:
    """Runs `python -m jaxtrain ARGS...` (see ForkedCLI) in the repository on the prepared data;
    returns the CompletedProcess (text stdout/stderr)."""
    return ForkedCLI(REPO, default_env=lambda: {**os.environ, "JAXTRAIN_DATA_DIR": _data_dir_env()})
