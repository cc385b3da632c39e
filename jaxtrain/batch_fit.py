"""Memory-aware gradient accumulation: `optimizer.grad_accum_steps="auto"`.

The train step is compiled ahead of time for each accumulation count A that splits the batch
(batch_size divisible by batch shards x A), smallest first, and the first whose XLA buffer
assignment (`compiled.memory_analysis()`: arguments + outputs - donated aliases + temporaries,
per device) fits the budget is used. Accumulation gives the big batch's update (tests/unit/
test_step.py), so every A runs the same experiment; a larger A only takes more, smaller passes.

A compile or a step that fails with RESOURCE_EXHAUSTED is retried at twice the accumulation
(the next count >= 2A). Fitting is lazy: it runs on the step's first call (or `.lower`), so
tools that only evaluate a run never compile its train step.
"""

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxtrain.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
GB = 1e9  # optimizer.memory_budget_gb counts decimal gigabytes
FIELD = "config.optimizer.grad_accum_steps"


def accum_candidates(batch_size: int, num_shards: int) -> tuple[int, ...]:
    """Every A with batch_size divisible by num_shards x A, ascending."""
    per_shard = batch_size // num_shards
    return tuple(a for a in range(1, per_shard + 1) if batch_size % (num_shards * a) == 0)


def step_bytes(compiled: Any) -> int:
    """Device memory the compiled step holds at its peak, per device (XLA's buffer assignment)."""
    m = compiled.memory_analysis()
    if m is None:
        raise ConfigError(
            f"{FIELD}=auto: this backend reports no memory analysis of compiled programs; "
            "set grad_accum_steps to a number"
        )
    held = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return int(held + m.temp_size_in_bytes)


def memory_budget(budget_gb: float, device: jax.Device) -> tuple[int, str]:
    """(bytes per device, where the number comes from).

    budget_gb > 0 is taken as given. 0 means the device's memory: the allocator's limit on
    GPU/TPU; CPU devices report none, so there it is the host's RAM shared by its local devices.
    """
    if budget_gb > 0:
        return int(budget_gb * GB), f"optimizer.memory_budget_gb={budget_gb:g}"
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    devices = jax.local_device_count()
    return ram // devices, f"host RAM / {devices} local device(s); CPUs report no memory limit"


def format_bytes(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.2f} MB"


def is_resource_exhausted(error: BaseException) -> bool:
    return isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)


@dataclasses.dataclass(frozen=True)
class Fit:
    accum: int
    compiled: Any  # jax.stages.Compiled at `accum`
    need_bytes: int
    budget_bytes: int
    tried: dict[int, str]  # smaller counts that did not fit -> their need (or "out of memory")


def fit_grad_accum(
    compile_at: Callable[[int], Any],
    candidates: Sequence[int],
    budget_bytes: int,
    *,
    budget_source: str,
    at_least: int = 1,
) -> Fit:
    """The smallest candidate >= at_least whose compiled step (compile_at(A)) fits the budget.

    Raises ConfigError naming the smallest need when none fits.
    """
    tried: dict[int, str] = {}
    needs: dict[int, int] = {}
    floor = at_least
    for a in candidates:
        if a < floor:
            continue
        try:
            compiled = compile_at(a)
        except jax.errors.JaxRuntimeError as e:
            if not is_resource_exhausted(e):
                raise
            tried[a] = "out of memory compiling"
            floor = 2 * a
            continue
        need = step_bytes(compiled)
        if need <= budget_bytes:
            return Fit(a, compiled, need, budget_bytes, tried)
        needs[a] = need
        tried[a] = format_bytes(need)
    budget = f"the budget of {format_bytes(budget_bytes)} ({budget_source})"
    if not needs:
        raise ConfigError(
            f"{FIELD}=auto: every accumulation count {list(candidates)} ran out of device memory "
            f"compiling against {budget}; lower batch_size or use a smaller model"
        )
    smallest = min(needs, key=needs.get)
    raise ConfigError(
        f"{FIELD}=auto: no accumulation count fits {budget}; the smallest need is "
        f"{format_bytes(needs[smallest])} per device at grad_accum_steps={smallest} (needs: "
        f"{', '.join(f'{a}: {t}' for a, t in tried.items())}); raise "
        "optimizer.memory_budget_gb, lower batch_size or use a smaller model"
    )


def describe_fit(fit: Fit, budget_source: str) -> str:
    """The one log line of the choice."""
    tried = ", ".join(f"{a}: {t}" for a, t in fit.tried.items())
    return (
        f"grad_accum_steps=auto chose {fit.accum}: the step needs "
        f"{format_bytes(fit.need_bytes)} per device of {format_bytes(fit.budget_bytes)} "
        f"({budget_source})" + (f"; did not fit: {tried}" if tried else "")
    )


def _is_abstract(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


class AutoAccumStep:
    """The jitted train step at the fitted accumulation, called like the jitted step.

    `make_step(A)` returns the jitted step for A; `abstract_args` are (state, batch)
    ShapeDtypeStructs with shardings. Traced calls (eval_shape) go to the jitted step at A=1:
    outputs have the same shapes for every A.
    """

    def __init__(
        self,
        make_step: Callable[[int], Any],
        abstract_args: tuple[Any, Any],
        candidates: Sequence[int],
        budget: tuple[int, str],
    ):
        self._make_step = make_step
        self._args = abstract_args
        self._candidates = tuple(candidates)
        self._budget = budget
        self._fit: Fit | None = None

    @property
    def grad_accum_steps(self) -> int:
        """The fitted accumulation (fits first if needed)."""
        return self._fitted().accum

    def _compile_at(self, accum: int) -> Any:
        return self._make_step(accum).lower(*self._args).compile()

    def _fitted(self, at_least: int = 1) -> Fit:
        if self._fit is None or self._fit.accum < at_least:
            bytes_, source = self._budget
            self._fit = fit_grad_accum(
                self._compile_at,
                self._candidates,
                bytes_,
                budget_source=source,
                at_least=at_least,
            )
            log.info("%s", describe_fit(self._fit, source))
        return self._fit

    def lower(self, *args, **kwargs) -> Any:
        return self._make_step(self.grad_accum_steps).lower(*args, **kwargs)

    def __call__(self, state: Any, batch: Any) -> Any:
        if _is_abstract((state, batch)):
            return self._make_step(1)(state, batch)
        fit = self._fitted()
        try:
            return fit.compiled(state, batch)
        except jax.errors.JaxRuntimeError as e:
            if not is_resource_exhausted(e):
                raise
            if any(x.is_deleted() for x in jax.tree.leaves(state)):
                raise ConfigError(
                    f"{FIELD}=auto: the step at {fit.accum} ran out of device memory after its "
                    f"donated state was freed; set grad_accum_steps={2 * fit.accum} and re-run "
                    "(the run resumes from its last checkpoint)"
                ) from e
            log.warning(
                "%s=auto: the step at %d ran out of device memory; retrying at >= %d",
                FIELD,
                fit.accum,
                2 * fit.accum,
            )
            self._fitted(at_least=2 * fit.accum)
            return self(state, batch)
