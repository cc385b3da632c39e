"""The command line's help text and argument scanning, given the table of commands.

Defines no flags (jaxtrain/cli/options.py does); reads their help text from absl.
"""

import dataclasses
import re
import textwrap
from collections.abc import Callable, Sequence

from absl import flags

PROG = "python -m jaxtrain"
# absl's own -v/--verbosity (default -1), read with jaxtrain's meaning; see jaxtrain/logs.py.
VERBOSITY_HELP = (
    "0 (default): jaxtrain's messages and every warning; 1: also other libraries' INFO logs "
    "(absl, tfds, orbax, grain, jax); 2: also DEBUG logs."
)
HELP_NAMES = ("h", "help", "?", "helpshort")


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str  # one line, for `python -m jaxtrain --help`
    usage: tuple[str, ...]  # what follows `python -m jaxtrain NAME`, one entry per form
    flags: tuple[str, ...]  # the flags it accepts (config also means --config.a.b=value)
    run: Callable[[list[str]], None]  # gets the positional arguments after NAME
    required: tuple[str, ...] = ()
    positional: bool = False  # takes positional arguments (else any is an error)
    flag_help: dict[str, str] = dataclasses.field(default_factory=dict)  # per-command wording
    notes: Callable[[], list[str]] | None = None  # more help lines, read from the registries


# --- help ------------------------------------------------------------------------------------


def _wrap(text: str, indent: int) -> str:
    return textwrap.fill(text, 100, subsequent_indent=" " * indent, break_on_hyphens=False)


def _wrap_usage(lead: str, form: str) -> str:
    """`lead form` in lines of at most 100 columns, breaking only between [...] groups."""
    lines = [lead]
    for word in re.findall(r"\[[^\]]*\]|--\S+(?: [^-\[\s]\S*)?|\S+", form):  # [..], --flag VALUE
        if len(lines[-1]) + 1 + len(word) > 100:
            lines.append(" " * len(lead))
        lines[-1] += " " + word
    return "\n".join(lines)


def overview(commands: dict[str, Command]) -> str:
    """`python -m jaxtrain --help`: the commands with one-line summaries."""
    width = max(map(len, commands))
    lines = [f"usage: {PROG} COMMAND [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in commands.items()]
    lines += ["", f"{PROG} COMMAND --help lists the flags of COMMAND.",
              _wrap(f"-v, --verbosity N (any command): {VERBOSITY_HELP}", 4)]  # fmt: skip
    return "\n".join(lines)


def command_help(commands: dict[str, Command], name: str) -> str:
    """`python -m jaxtrain NAME --help`: its usage and only its flags."""
    c = commands[name]
    lines = [_wrap_usage(f"{'usage:' if i == 0 else '':<6} {PROG} {name}", form)
             for i, form in enumerate(c.usage)]  # fmt: skip
    lines += ["", c.summary]
    if c.notes is not None:
        lines += ["", *[_wrap(f"  {note}", 4) for note in c.notes()]]
    lines += ["", "flags:"]
    rows = [(_flag_label(f), _flag_text(c, f)) for f in c.flags]
    rows += [("-v, --verbosity N", VERBOSITY_HELP), ("-h, --help", "Show this help.")]
    width = max(len(label) for label, _ in rows)
    lines += [_wrap(f"  {label:<{width}}  {text}", width + 4) for label, text in rows]
    return "\n".join(lines)


def _flag_label(name: str) -> str:
    flag = flags.FLAGS[name]
    return f"--[no]{name}" if flag.boolean else f"--{name}"


def _flag_text(c: Command, name: str) -> str:
    flag = flags.FLAGS[name]
    text = c.flag_help.get(name, flag.help.split(";\n")[0])  # less absl's note on multi flags
    if name in c.required:
        return f"{text} (required)"
    if isinstance(flag, flags.MultiFlag):
        return f"{text} (repeatable)"
    if flag.default not in (None, "") and name != "config":
        return f"{text} (default: {str(flag.default).lower() if flag.boolean else flag.default})"
    return text


# --- parsing ---------------------------------------------------------------------------------


def scan(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(flag names, positional arguments) as absl will read them; a known non-boolean flag
    given as `--name value` takes the next argument as its value."""
    names, positional, i = [], [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, _ = arg.lstrip("-").partition("=")
        names.append(name)
        if not eq and name in flags.FLAGS and not flags.FLAGS[name].boolean:
            i += 1
    return names, positional


def canonical(name: str) -> str:
    if name in flags.FLAGS:
        return flags.FLAGS[name].name
    if name.startswith("no") and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean:
        return name[2:]
    return name
