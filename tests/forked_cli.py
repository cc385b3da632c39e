"""`python -m jaxtrain ARGS` for tests, without Python and JAX start-up per call (conftest's
`run_cli` fixture). A module of its own (not conftest.py) because the forkserver's children
import the target function by module name."""

import multiprocessing
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable


def cpu_seconds() -> float:
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _forked_main(args, cwd, env, out_path, err_path) -> None:
    """In a child forked from the CLI server: `python -m jaxtrain ARGS` with stdout and stderr
    sent to the given files; exits with the command's exit code."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
    sys.argv = ["jaxtrain", *args]
    code = 0
    try:
        runpy.run_module("jaxtrain", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # what an uncaught exception does to `python -m`
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if log := os.environ.get("JAXTRAIN_TEST_CPU_LOG"):  # see pytest_runtest_protocol
            with open(log, "a") as f:
                f.write(f"{cpu_seconds():.2f}\t{os.environ.get('PYTEST_CURRENT_TEST')} (CLI)\n")
        os._exit(code)


class ForkedCLI:
    """`python -m jaxtrain ARGS` without paying Python and JAX start-up per call.

    A forkserver process imports jaxtrain and its libraries once (no JAX backend, no threads:
    fork-safe); each call forks a child from it that runs the real entry point, exactly as
    `python -m jaxtrain` does, in its own process (fresh JAX backend, its own exit code, stdout
    and stderr). Most CLI tests are start-up bound, so this keeps them cheap; tests of signals,
    kills and multiple processes start real subprocesses.
    """

    PRELOAD = ["jaxtrain.cli", "jaxtrain.train", "jaxtrain.tools.sweep", "jax", "flax.nnx",
               "optax", "orbax.checkpoint", "tensorflow_datasets", "grain"]  # fmt: skip

    def __init__(self, cwd: str, default_env: Callable[[], dict[str, str]]):
        self._cwd, self._default_env = cwd, default_env
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(self.PRELOAD)

    def __call__(self, *args: str, timeout: int = 600, cwd: str | None = None, env=None):
        env = env if env is not None else self._default_env()
        cwd = cwd or self._cwd
        with tempfile.TemporaryDirectory(prefix="jaxtrain-cli-") as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            for path in (out, err):
                open(path, "w").close()
            child = self._ctx.Process(target=_forked_main, args=(list(args), cwd, env, out, err))
            child.start()
            child.join(timeout)
            if child.is_alive():
                child.kill()
                child.join()
                raise subprocess.TimeoutExpired(["jaxtrain", *args], timeout)
            with open(out, errors="replace") as f_out, open(err, errors="replace") as f_err:
                stdout, stderr = f_out.read(), f_err.read()
        return subprocess.CompletedProcess(["jaxtrain", *args], child.exitcode, stdout, stderr)
