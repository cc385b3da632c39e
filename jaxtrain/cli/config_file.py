"""The --config file's own mistakes as one line naming the file: missing, a syntax error, no
get_config(), or an exception raised by its code.

ml_collections executes the file while absl parses the flags; without these checks a syntax
error is a traceback and an error inside get_config() reads like a bad command line.
"""

import ast
import os
import types
from collections.abc import Sequence


def config_path(args: Sequence[str]) -> str | None:
    """The --config file as given (without a `:ARGS` suffix), or None."""
    for i, arg in enumerate(args):
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name != "config":
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        return value.split(":", 1)[0]
    return None


def check_config_file(path: str) -> str | None:
    """What is wrong with the file before it runs, or None."""
    where = f"--config {path}"
    if not os.path.isfile(path):
        reason = "is a directory" if os.path.isdir(path) else "no such file"
        return f"{where}: {reason} (give an experiment file such as experiments/NAME.py)"
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except OSError as e:
        return f"{where}: cannot read it ({e.strerror or e})"
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes; UnicodeError: not UTF-8
        line = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        return f"{where}{line}: {type(e).__name__}: {getattr(e, 'msg', None) or e}"
    if "get_config" not in _top_level_names(tree):
        return f"{where}: defines no get_config() (see experiments/ for examples)"
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def raised_by_config_file(error: BaseException, path: str) -> str | None:
    """`--config FILE line N: Type: message` when the file's own code raised `error` (or an
    exception it wraps), else None (then it is a bad override or a bug)."""
    target = os.path.abspath(path)
    seen: BaseException | None = error
    for _ in range(10):  # absl and ml_collections wrap an error at most twice
        if seen is None:
            break
        line = _innermost_line(seen.__traceback__, target)
        if line is not None:
            message = " ".join(str(seen).split())
            return f"--config {path} line {line}: {type(seen).__name__}: {message}"
        seen = seen.__cause__ or seen.__context__
    return None


def _innermost_line(tb: types.TracebackType | None, target: str) -> int | None:
    line = None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
