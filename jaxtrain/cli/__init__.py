"""Command line: `python -m jaxtrain COMMAND ...`; `python -m jaxtrain COMMAND --help` per command.

The only package that prints results or exits: it parses, calls the library, and turns bad input
into one `error: ...` line with exit code 2. options.py holds the flags, commands.py the table of
commands; help.py renders help text.
"""

import difflib
import os
import sys

from absl import app, flags

from jaxtrain.cli.commands import COMMANDS, OWN_FLAGS
from jaxtrain.cli.config_file import check_config_file, config_path, raised_by_config_file
from jaxtrain.cli.help import HELP_NAMES, canonical, command_help, overview, scan
from jaxtrain.cli.options import fail, need, see
from jaxtrain.errors import (
    EXIT_BAD_INPUT,
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    CheckpointError,
    ConfigError,
    DataError,
    Preempted,
)
from jaxtrain.logs import setup_logging


def _check_flags(command: str, names: list[str]) -> None:
    """One line for the first flag that belongs to another command."""
    accepted = COMMANDS[command].flags
    for name in names:
        own = canonical(name)
        parent = "config" if own.startswith("config.") else own
        if parent in OWN_FLAGS and parent not in accepted:
            fail(f"--{own} is not a flag of {command!r}; {see(command)}")


def _check_command(positional: list[str]) -> str:
    if not positional:
        fail(f"expected a command, one of: {', '.join(COMMANDS)}; {see(None)}")
    command = positional[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fail(f"unknown command {command!r}{hint}; use one of: {', '.join(COMMANDS)}")
    return command


# What absl and ml_collections raise for a bad flag or --config.a.b=value override.
_BAD_OVERRIDE = (flags.Error, AttributeError, KeyError, TypeError, ValueError)


def _parse_flags(argv: list[str]) -> list[str]:
    """Handles --help, unknown commands and foreign flags, then lets absl parse the flags."""
    names, positional = scan(argv[1:])
    if any(name in HELP_NAMES for name in names):
        command = positional[0] if positional and positional[0] in COMMANDS else None
        print(command_help(COMMANDS, command) if command else overview(COMMANDS))
        sys.exit(0)
    if not argv[1:]:
        print(overview(COMMANDS), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    command = _check_command(positional)
    _check_flags(command, names)
    path = config_path(argv[1:])
    if path is not None and (problem := check_config_file(path)):
        fail(problem)
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - the config file's own errors, whatever their type
        problem = raised_by_config_file(e, path) if path is not None else None
        if problem and not os.environ.get("JAXTRAIN_DEBUG"):
            fail(problem)
        if problem or not isinstance(e, _BAD_OVERRIDE):
            raise  # JAXTRAIN_DEBUG, or a bug
        # A typo in a config override becomes one line naming the field. ml_collections wraps
        # a KeyError (whose str() is a repr) in an AttributeError.
        inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
        text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
        fail(f"bad command line: {' '.join(str(text).split())}; {see(command)}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """Runs the command; maps bad input and the run's outcomes to documented exit codes."""
    setup_logging(flags.FLAGS.verbosity)
    name, args = argv[1], argv[2:]
    command = COMMANDS[name]
    if args and not command.positional:
        fail(f"{name!r} takes no positional arguments, got {' '.join(args)}; {see(name)}")
    need(name, **{f: _given(f) for f in command.required})
    try:
        command.run(args)
    except FloatingPointError as e:
        fail(str(e), code=EXIT_NONFINITE)
    except Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except (ConfigError, CheckpointError, DataError, OSError) as e:
        # Bad input is reported as one line; a traceback is for bugs, not for typos. An OSError
        # (a missing or unwritable path, a full disk) names its file and is not a bug either.
        if os.environ.get("JAXTRAIN_DEBUG"):
            raise
        fail(str(e))


def _given(name: str):
    """The flag's value, or True for a given --config (reading its value loads the file)."""
    if name == "config":
        return True if flags.FLAGS["config"].present else None
    return flags.FLAGS[name].value


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)
