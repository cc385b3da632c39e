"""Orbax checkpointing: train state + data-iterator state + metadata, one manager per workdir.

Each checkpoint step directory holds three items:
  state  the TrainState plus the pending (not yet logged) metric sums, as arrays (no pickles)
  data   the grain iterator state, as JSON
  meta   the resolved config, provenance and format version, as JSON
Orbax writes into a temporary directory and renames it when complete, so a crash or kill mid-save
never leaves a half-written step that looks finished.
"""

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxtrain.errors import CheckpointError
from jaxtrain.models.registry import family_config_of

FORMAT_VERSION = 1
DAMAGED_DIR = "checkpoints_damaged"  # next to checkpoints/: steps that failed to restore
# Config fields that decide the shapes in the state; a checkpoint whose values differ cannot be
# restored into this run.
# (optimizer.ema_decay: with EMA the state holds the average too, and its decay is part of the
# run's arithmetic. Pruning on/off adds the masks to the optimizer state.)
STATE_DEFINING_FIELDS = (
    "model",
    "optimizer.name",
    "optimizer.ema_decay",
    "data.name",
    "dropout_rng",
    "prune.target_sparsity",
    # LoRA: which params the state trains (its tree) and the adapters' scale.
    "finetune.lora_rank",
    "finetune.lora_alpha",
    "finetune.lora_targets",
    "finetune.trainable",
)
# Value of a state-defining field in configs saved before the field existed.
_FIELD_DEFAULTS = {
    "dropout_rng": "threefry2x32",
    "optimizer.ema_decay": 0.0,
    "prune.target_sparsity": 0.0,
    "finetune.lora_rank": 0,
    "finetune.lora_alpha": 16.0,
    "finetune.lora_targets": (),
    "finetune.trainable": (),
}

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_state: dict[str, Any]
    meta: dict[str, Any]


def _preservation(keep: int, keep_best: int, best_metric: str, best_mode: str):
    policies = [pp.LatestN(n=keep)]
    if keep_best > 0:
        policies.append(
            pp.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric],
                reverse=best_mode == "min",
                n=keep_best,
                keep_checkpoints_without_metrics=False,
            )
        )
    return pp.AnyPreservationPolicy(policies)


class Checkpointer:
    """Saves every `every` steps (asynchronously unless told otherwise) and restores."""

    def __init__(
        self,
        directory: str,
        *,
        keep: int,
        keep_best: int,
        best_metric: str,
        best_mode: str,
        async_save: bool,
        read_only: bool = False,
    ):
        """`read_only` (eval, sample, export): never creates, cleans up or saves anything."""
        self.directory = os.path.abspath(directory)
        self.damaged_directory = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
        self.best_metric = best_metric
        self.best_mode = best_mode
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {self.directory} (the folder does not exist)")
        options = ocp.CheckpointManagerOptions(
            preservation_policy=_preservation(keep, keep_best, best_metric, best_mode),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,  # leftovers of a save that was killed
            create=not read_only,
        )
        try:
            self.manager = ocp.CheckpointManager(
                self.directory, item_names=("state", "data", "meta"), options=options
            )
        except OSError as e:
            raise CheckpointError(
                f"cannot create checkpoint directory {self.directory}: {e}"
            ) from e
        # Orbax removes those leftovers in a background thread that only the first save waits
        # for. A run that stops with an error before saving would exit while it still runs, and
        # the thread's traceback at interpreter shutdown would bury the one-line error.
        self.manager._maybe_await_cleanup_tmp_directory()  # noqa: SLF001 - orbax 0.12 has no public way

    def save(
        self, step: int, state: Any, data_state: dict, meta: dict, metrics: dict | None
    ) -> None:
        """Starts a save; returns once the arrays are copied off the step's buffers."""
        # BestN ranks by the metric; without one, a step is kept only as one of the latest.
        has_metric = metrics is not None and self.best_metric in metrics
        ranked = {self.best_metric: float(metrics[self.best_metric])} if has_metric else None
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(data_state),
                    meta=ocp.args.JsonSave(
                        {**meta, "format_version": FORMAT_VERSION, "ranking": ranked}
                    ),
                ),
                metrics=ranked,
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - tensorstore reports I/O errors as ValueError
            # The failure may belong to this save or to the previous asynchronous one.
            raise CheckpointError(
                f"saving a checkpoint (step {step} or the save before it) to {self.directory} "
                f"failed: {_short(e)}. Earlier complete checkpoints are untouched; free disk "
                "space or fix permissions, then re-run the same command to resume."
            ) from e

    def wait(self) -> None:
        """Blocks until any asynchronous save has been committed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"an asynchronous save to {self.directory} failed: {_short(e)}. Earlier complete "
                "checkpoints are untouched; free disk space, then re-run to resume."
            ) from e

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`, from each step's own metadata."""
        scored = []
        for step in self.steps():
            ranking = self.read_meta(step).get("ranking") or {}
            if self.best_metric in ranking:
                scored.append((ranking[self.best_metric], step))
        if not scored:
            return None
        pick = max if self.best_mode == "max" else min
        return pick(scored)[1]

    def read_meta(self, step: int) -> dict[str, Any]:
        return self._read(step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def _read(self, step: int, args: ocp.args.Composite) -> Any:
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} cannot be read, it may be damaged "
                f"({_short(e)}); saved steps: {', '.join(map(str, self.steps()))}"
            ) from e

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores one step into `abstract_state`'s shapes and shardings (any mesh size)."""
        out = self._read(
            step,
            ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return Restored(step=step, state=out["state"], data_state=out["data"], meta=out["meta"])

    def restore_latest(
        self, abstract_state: Any, config: dict, *, allow_fresh_start: bool = False
    ) -> Restored | None:
        """The newest checkpoint that restores, or None for a fresh start.

        A damaged step is moved aside (kept for inspection, never deleted) with a warning that
        names it, so the run resumes from the one before and can save that step again. Raises
        CheckpointError as check_resume does.
        """
        while (step := self.check_resume(config, allow_fresh_start=allow_fresh_start)) is not None:
            try:
                return self.restore(step, abstract_state)
            except CheckpointError as e:
                self._set_aside(step, e)
        return None

    def check_resume(self, config: dict, *, allow_fresh_start: bool = False) -> int | None:
        """The newest step `config` may resume, or None for a fresh start; reads JSON only, so
        train calls it before building data and model. Steps whose metadata is unreadable are
        moved aside.

        Raises CheckpointError for an incompatible config, and when steps were set aside (now
        or by an earlier attempt) but none is left, unless `allow_fresh_start`: hours of
        training must not be replaced by a fresh run without the user asking for it.
        """
        for step in reversed(self.steps()):
            try:
                meta = self.read_meta(step)
            except CheckpointError as e:
                self._set_aside(step, e)
                continue
            check_compatible(meta.get("config", {}), config, f"{self.directory}/{step}")
            return step
        damaged = self.damaged_steps()
        if damaged and not allow_fresh_start:
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores: damaged step(s) "
                f"{', '.join(map(str, damaged))} are in {self.damaged_directory}. Nothing was "
                "trained or written. To train from step 0 on purpose, re-run with "
                "--config.checkpoint.allow_fresh_start=true"
            )
        return None

    def damaged_steps(self) -> list[int]:
        """Steps set aside in checkpoints_damaged/ (folders named STEP-UNIXTIME)."""
        if not os.path.isdir(self.damaged_directory):
            return []
        names = os.listdir(self.damaged_directory)
        return sorted({int(n.split("-")[0]) for n in names if n.split("-")[0].isdigit()})

    def aside_path(self, name: str) -> str:
        """A new path NAME-UNIXTIME in checkpoints_damaged/ for a step or a file."""
        return os.path.join(self.damaged_directory, f"{name}-{int(time.time())}")

    def _set_aside(self, step: int, error: Exception) -> None:
        aside = self.damaged_directory
        target = self.aside_path(str(step))
        log.warning(
            "checkpoint step %d in %s is damaged (%s); moved to %s, trying an older one",
            step,
            self.directory,
            _short(error.__cause__ or error),  # the orbax error, not our wrapper
            target,
        )
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            os.replace(os.path.join(self.directory, str(step)), target)
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    if len(text) > 400:  # keep both ends: the operation and the OS reason (e.g. disk full)
        text = f"{text[:200]} ... {text[-200:]}"
    return f"{type(e).__name__}: {text}"


def _lookup(config: dict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_compatible(saved: dict, current: dict, where: str) -> None:
    """Raises CheckpointError naming each state-defining field that differs."""
    diffs = []
    # Runs saved before per-family model configs stored every family's fields: compare only
    # the fields of the saved run's family.
    saved = {**saved, "model": family_config_of(saved.get("model") or {})}
    for field in STATE_DEFINING_FIELDS:
        a, b = (_lookup(cfg, field) for cfg in (saved, current))
        a, b = (_FIELD_DEFAULTS.get(field) if v is None else v for v in (a, b))
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [
                f"{field}.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if _norm(a.get(k)) != _norm(b.get(k))
            ]
        elif _norm(a) != _norm(b):
            diffs.append(f"{field}: checkpoint {a!r} vs config {b!r}")
    if diffs:
        raise CheckpointError(
            f"checkpoint {where} was written by an incompatible config ({'; '.join(diffs)}). "
            "Use a new --workdir, or --config.init_from to load its params only."
        )


def _norm(value: Any) -> Any:
    # JSON turns tuples into lists; compare them as equal.
    return list(value) if isinstance(value, tuple) else value


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
    )
