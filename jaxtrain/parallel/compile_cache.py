"""JAX's persistent compilation cache: a second run of the same step skips XLA compilation.

The cache is keyed by the program, the compile options, the devices and the jax/jaxlib versions,
so a changed model or mesh just misses. benchmarks/compile_cache.py measures the saving.

The cache is trusted code: a directory others can write to lets them run code in this process
(JAX's own warning), so it lives under the user's home by default.
"""

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from jaxtrain.errors import ConfigError

ENV_VAR = "JAXTRAIN_COMPILE_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "jaxtrain", "xla")
# A size bound turns on JAX's LRU eviction, and with it a file lock around every read and write:
# processes sharing one cache (the processes of a host, parallel test workers) never read an
# entry another is still writing.
MAX_BYTES = 4 << 30
OFF_VALUES = ("", "off")
# File names of JAX's size-bounded cache (jax/_src/lru_cache.py): KEY-cache holds the compiled
# program, KEY-atime its last access (nanoseconds since the epoch, 8 bytes little-endian).
CACHE_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"


def resolve_cache_dir(cache_dir: str | None) -> str:
    """The absolute cache directory, or "" when caching is off.

    None means the default: $JAXTRAIN_COMPILE_CACHE, else ~/.cache/jaxtrain/xla. "" and "off"
    (also as the environment variable's value) turn the cache off.
    """
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_VAR, DEFAULT_DIR)
    if cache_dir.strip().lower() in OFF_VALUES:
        return ""
    return os.path.abspath(os.path.expanduser(cache_dir))


def backfill_access_times(path: str) -> int:
    """Gives every cache entry that lacks one the access-time file JAX's size-bounded cache
    keeps beside it (the entry's mtime, in JAX's format); returns how many were added.

    Entries written while the cache had no size bound (by older jaxtrain, or by jax itself)
    have none, and JAX's eviction scan reads one for every entry: without this, every later
    write to such a directory fails ("Error writing persistent compilation cache entry ...
    FileNotFoundError ...-atime") and the cache stops caching. Best effort: another process may
    be doing the same, and an unreadable directory only costs the cache.
    """
    added = 0
    try:
        names = set(os.listdir(path))
    except OSError:
        return 0
    for name in names:
        if not name.endswith(CACHE_SUFFIX):
            continue
        atime = name[: -len(CACHE_SUFFIX)] + ATIME_SUFFIX
        if atime in names:
            continue
        try:
            stamp = os.stat(os.path.join(path, name)).st_mtime_ns
            with open(os.path.join(path, atime), "xb") as f:
                f.write(stamp.to_bytes(8, "little"))
            added += 1
        except OSError:
            pass  # removed meanwhile, or written by another process first
    return added


def enable_compilation_cache(cache_dir: str | None) -> str:
    """Turns the persistent compilation cache on in `cache_dir` (or off); returns the directory
    in use ("" when off). Call before the first compilation you want cached.
    """
    path = resolve_cache_dir(cache_dir)
    previous = (
        jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else ""
    )
    if not path:
        jax.config.update("jax_enable_compilation_cache", False)
        if previous:
            compilation_cache.reset_cache()
        return ""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"config.compile_cache_dir: cannot create the compilation cache {path}: {e}; "
            f"pick a writable directory, or turn it off with compile_cache_dir=off "
            f"(${ENV_VAR}=off)"
        ) from e
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    # JAX only caches programs that took >= 1 s to compile; small CPU steps compile faster than
    # that but still cost seconds per run, so cache everything. -1: no size floor either.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    backfill_access_times(path)
    if previous and previous != path:
        # JAX opens its cache once per process; a new directory needs a fresh start.
        compilation_cache.reset_cache()
    return path
