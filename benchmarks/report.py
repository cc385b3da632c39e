"""The shared ending of the benchmark scripts: a header line, a Markdown table, optional JSON."""

import json


def emit(header: str, table: str, out: dict, path: str = "") -> None:
    """Prints header and table; writes out as indented JSON to path when one is given."""
    print(header)
    print(table)
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
