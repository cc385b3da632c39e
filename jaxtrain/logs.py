"""Log output of the command line: jaxtrain's own INFO lines plain, other libraries' INFO only on
request, and everyone's warnings. Library modules log to `logging.getLogger(__name__)` and never
print; the CLI calls `setup_logging` once.
"""

import logging
import sys

from absl import logging as absl_logging


def _is_ours(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "jaxtrain"  # every module logs to getLogger(__name__)


class _Formatter(logging.Formatter):
    """jaxtrain's INFO as plain lines; other libraries keep absl's `I1202 12:00:00 file.py:1]`."""

    def __init__(self):
        super().__init__()
        self._absl = absl_logging.PythonFormatter()

    def format(self, record: logging.LogRecord) -> str:
        if not _is_ours(record):
            return self._absl.format(record)
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(verbosity: int) -> None:
    """One stderr handler: jaxtrain's INFO and everyone's warnings; other libraries' INFO only
    from --verbosity=1, DEBUG from 2. Replaces the handler absl's app.run puts on the root."""
    root = logging.getLogger()
    root.removeHandler(absl_logging.get_absl_handler())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    if verbosity < 1:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or _is_ours(r))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    logging.getLogger("absl").setLevel(logging.NOTSET)  # tfds, orbax, grain log through it
