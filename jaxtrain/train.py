"""train_and_evaluate: the one linear training loop."""

import dataclasses
import logging
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from jaxtrain import data as data_lib
from jaxtrain import distill, ensemble, lora, provenance, prune
from jaxtrain import metrics as metrics_lib
from jaxtrain.build import (
    abstract_like,
    compile_steps,
    create_state_and_spec,
    fuse_metric_sums,
    make_carry,
    zero_train_metrics,
)
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.data.loader import DataOptions, DatasetInfo
from jaxtrain.drift import REFERENCE_FILE, DriftMonitor
from jaxtrain.early_stopping import EarlyStopping
from jaxtrain.errors import CheckpointError, Preempted
from jaxtrain.evaluation import data_options, evaluate_split
from jaxtrain.fingerprint import FingerprintLog
from jaxtrain.parallel import sharding
from jaxtrain.parallel.compile_cache import enable_compilation_cache
from jaxtrain.parallel.distributed import initialize_distributed
from jaxtrain.perf import PerfTimer, tokens_per_example
from jaxtrain.preemption import PreemptionWatcher
from jaxtrain.profiling import StepTrace
from jaxtrain.step import TrainState
from jaxtrain.validation import validate_against_dataset, validate_config
from jaxtrain.warm_start import warm_start
from jaxtrain.writers import MetricWriter, check_metrics, supersede_metrics, write_json

log = logging.getLogger(__name__)


def _log_train(writer, bar, step, total, steps, perf, seeds) -> dict[str, float]:
    members = ensemble.split_members(total, len(seeds)) if len(seeds) > 1 else [total]
    per_member = []
    for seed, t in zip(seeds, members, strict=True):
        try:
            metrics_lib.check_finite(float(t["loss"]), int(t["nonfinite_step"]), step)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} (seed {seed})" if len(seeds) > 1 else str(e)) from e
        per_member.append({k: float(v) / steps for k, v in t.items() if k != "nonfinite_step"})
    if len(seeds) == 1:
        values = per_member[0]
    else:
        values = ensemble.summarize_members(per_member, seeds)
    scalars = {f"train/{k}": v for k, v in values.items()}
    scalars.update(perf)
    writer.write(step, scalars)
    bar.set_postfix(
        loss=f"{scalars['train/loss']:.4f}",
        steps_s=f"{scalars['perf/steps_per_sec']:.1f}",
        ex_s=f"{scalars['perf/examples_per_sec']:.0f}",
    )
    return scalars


def _write_eval(workdir, writer, step, scalars, confusion, split, class_names) -> None:
    writer.write(step, scalars)
    if writer.enabled and confusion is not None:
        path = os.path.join(workdir, "eval", f"confusion_{split}_step{step}.json")
        record = {
            "step": step,
            "split": split,
            "classes": list(class_names),
            "rows_true_cols_pred": confusion.tolist(),
            "per_class": metrics_lib.per_class_metrics(confusion, class_names),
        }
        write_json(path, record)


@dataclasses.dataclass
class RunResult:
    state: TrainState
    metrics: dict[str, float]  # last train log, last validation and the test evaluation
    steps: int = 0  # the step training ended at
    eval_steps: int = 0  # config.eval_steps: > 0 means evaluations covered only that many batches


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True
) -> RunResult:
    """Trains, evaluates on validation every eval_every steps and on test at the end.

    A workdir with checkpoints resumes from the newest good one, bitwise identically.
    """
    # --- setup: validate before anything compiles, record the run -------------------------
    c = config
    d = c.distributed
    initialize_distributed(
        coordinator_address=d.coordinator_address,
        num_processes=d.num_processes,
        process_id=d.process_id,
        auto=d.auto,
        cpu_devices_per_process=d.cpu_devices_per_process,
        timeout_s=d.timeout_s,
    )
    mesh = sharding.create_mesh(c.num_devices, tuple(c.mesh.shape))
    validate_config(c, sharding.num_batch_shards(mesh))
    enable_compilation_cache(None if c.compile_cache_dir == "auto" else c.compile_cache_dir)
    opts = data_options(c)
    info = data_lib.get_dataset_info(opts)
    validate_against_dataset(
        c, task=info.task, num_classes=info.num_classes, vocab_size=info.vocab_size
    )
    class_weights = _class_weights(c, opts, info)
    teacher = distill.load_teacher(c, mesh, info)  # None unless config.distill.teacher
    is_main = jax.process_index() == 0
    run_meta = {
        "config": c.to_dict(),
        "provenance": provenance.collect_provenance(dict(mesh.shape)),
    }
    if is_main:
        _prepare_workdir(workdir)
    ckpt = _create_checkpointer(c, workdir)
    # Fail before data and model are built: a config the checkpoints refuse, no checkpoint
    # left but damaged ones, or a metrics.jsonl that cannot be resumed.
    ckpt.check_resume(c.to_dict(), allow_fresh_start=c.checkpoint.allow_fresh_start)
    if is_main:
        check_metrics(workdir)

    # --- data ---------------------------------------------------------------------------
    seeds = ensemble.member_seeds(c.seed, c.num_seeds)
    iterators = [
        data_lib.create_train_iterator(
            dataclasses.replace(opts, seed=s),
            global_batch_size=c.batch_size,
            num_classes=info.num_classes,
        )
        for s in seeds
    ]
    # One member: the grain iterator itself; several: each member reads its own data order.
    train_iter = iterators[0] if len(seeds) == 1 else ensemble.MemberIterators(iterators)

    # --- model, optimizer, shardings ----------------------------------------------------
    state, spec, state_sharding = create_state_and_spec(c, mesh, info, class_weights, teacher)
    train_fn, eval_fn = compile_steps(
        c, mesh, spec, state_sharding, info=info, state=state, teacher=teacher
    )
    fingerprints = FingerprintLog(spec, mesh, workdir, every=c.fingerprint_every, enabled=is_main)
    data_sharding = sharding.batch_sharding(mesh)
    zero_pending = zero_train_metrics(
        train_fn, state, info, c.batch_size, data_sharding, num_members=c.num_seeds
    )
    if c.num_seeds > 1:
        data_sharding = ensemble.member_sharding(data_sharding)
    step_and_sum = fuse_metric_sums(train_fn, state, zero_pending, data_sharding)
    # Fingerprints take the batch placed on the mesh (their jit has no input shardings).
    place_batch = sharding.make_global_batch if fingerprints.every else sharding.step_batch
    trained, total = lora.count_params(state)  # LoRA trains a fraction of the model's params
    log.info(
        "workdir %s; mesh %s; %s params%s",
        workdir,
        dict(mesh.shape),
        f"{total:,}",
        f" ({trained:,} trained)" if trained != total else "",
    )
    drift = DriftMonitor(c, info, mesh) if c.drift.num_examples else None
    if c.optimizer.ema_decay > 0:
        log.info(
            "validation and test metrics use the EMA of the weights (optimizer.ema_decay=%g)",
            c.optimizer.ema_decay,
        )

    # --- restore ------------------------------------------------------------------------
    carry, restored = _restore_or_start(c, ckpt, state, zero_pending, train_iter, workdir, is_main)
    if is_main:
        # Only now: a config the checkpoints refuse must not overwrite the run's own record.
        _prepare_workdir(workdir, run_meta)
    state, pending, since = carry["train_state"], carry["pending"], int(carry["pending_steps"])
    # Before the writer creates metrics.jsonl: a SIGTERM from here on saves and exits 4 after the
    # first step instead of killing the process (the test waits for that file, then signals).
    watcher = PreemptionWatcher()
    writer = MetricWriter(workdir, enabled=is_main)

    # --- loop -----------------------------------------------------------------------------
    start = int(np.asarray(state.step).reshape(-1)[0])  # members share the step
    fingerprints.start(state, start)
    bar = tqdm.tqdm(
        total=c.total_steps,
        initial=start,
        disable=not (progress and is_main),
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    final: dict[str, float] = {}
    last_eval: dict[str, float] | None = None
    stopper = _create_early_stopping(c, restored)
    # Examples per step count every member's batch.
    timer = PerfTimer(
        c.batch_size * c.num_seeds, tokens_per_example(info.input_shape, info.input_dtype)
    )
    trace = StepTrace(
        os.path.join(workdir, "profile"),
        c.profile.start_step,
        c.profile.num_steps,
        enabled=is_main,
    )
    t_start = time.perf_counter()
    end = start if stopper is not None and stopper.stopped else c.total_steps
    # Plain ints in the loop: each ConfigDict lookup costs 1-10 us of host time per step.
    total, log_every, eval_every = c.total_steps, c.log_every, c.eval_every
    save_every = c.checkpoint.every
    for step in range(start, end):
        trace.before_step(step)
        with timer.data_wait():
            local_batch = next(train_iter)
        batch = place_batch(local_batch, data_sharding)  # loop time, not data wait
        grads_fp = fingerprints.grads(state, batch, step + 1)  # None unless due
        state, pending = step_and_sum(state, pending, batch)  # one dispatch: step + metric sums
        since += 1
        bar.update(1)
        done = step + 1
        trace.after_step(done, state)
        fingerprints.write(done, state, grads_fp)
        if done % log_every == 0 or done == total:
            # The loop's host sync (besides fingerprints, when on): fetching the summed metrics.
            # Fetch before timing, so the interval ends when its steps have finished running.
            totals = jax.device_get(pending)
            scalars = _log_train(writer, bar, done, totals, since, timer.lap(since), seeds)
            final.update(scalars)
            pending = zero_pending
            since = 0
        ranking = None  # metrics that rank this step's checkpoint among the best
        if done % eval_every == 0 or done == total:
            last_eval, confusion = evaluate_split(c, "validation", state, eval_fn, mesh, info)
            ranking = last_eval
            _write_eval(workdir, writer, done, last_eval, confusion, "validation", info.class_names)
            if drift is not None:  # its own record: validation vs a train sample
                writer.write(done, drift.validation_scalars(state))
            if is_main:
                log.info("step %d: %s", done, _format_eval(last_eval))
            final.update(last_eval)
            if stopper is not None:
                if stopper.update(done, last_eval[c.checkpoint.best_metric]):
                    end = done
                # Only the step early stopping calls best may be kept as the best checkpoint.
                ranking = last_eval if stopper.best_step == done else None
        preempted = watcher.should_stop(done)
        # With early stopping every evaluated step is saved, so the best one is always on disk.
        evaluated = stopper is not None and done % eval_every == 0
        if done % save_every == 0 or done == end or evaluated or preempted:
            carry = make_carry(state, pending, since)
            meta = run_meta | {"early_stopping": stopper.to_dict() if stopper else None}
            with timer.checkpoint_stall():
                ckpt.save(done, carry, train_iter.get_state(), meta, ranking)
        if done == end:
            break
        if preempted and done < total:
            trace.close()
            ckpt.wait()  # synchronous: the process is about to exit
            watcher.close()
            writer.close()
            raise Preempted(done)
    watcher.close()
    trace.close()
    bar.close()
    ckpt.wait()

    # --- final evaluation on the test split ----------------------------------------------
    state = _best_state(ckpt, stopper, state, pending, end, final, writer)
    scalars, confusion = evaluate_split(c, "test", state, eval_fn, mesh, info)
    _write_eval(workdir, writer, end, scalars, confusion, "test", info.class_names)
    if drift is not None:  # the tested state's statistics, for `python -m jaxtrain drift`
        tested = int(final.get("early_stopping/best_step", end))
        path = os.path.join(workdir, REFERENCE_FILE)
        drift.write_reference(state, tested, path, write=is_main)
    final.update(scalars)
    final.update(prune.final_metrics(c, state.params))
    final.update(lora.final_metrics(state))
    final["time/train_seconds"] = time.perf_counter() - t_start
    writer.close()
    ckpt.close()
    if is_main:
        write_json(os.path.join(workdir, "final_metrics.json"), final)
    return RunResult(state=state, metrics=final, steps=end, eval_steps=c.eval_steps)


def _restore_or_start(c, ckpt, state, zero_pending, train_iter, workdir, is_main):
    """The carry to start from: this run's newest good checkpoint, else a warm start from
    config.init_from, else the fresh state. Returns (carry, restored checkpoint or None).

    `pending` holds metric sums since the last log step, so a resume mid-interval logs the same
    averages as an uninterrupted run. Raises CheckpointError when every checkpoint is damaged,
    unless config.checkpoint.allow_fresh_start.
    """
    carry = make_carry(state, zero_pending, 0)
    allow_fresh = c.checkpoint.allow_fresh_start
    restored = ckpt.restore_latest(abstract_like(carry), c.to_dict(), allow_fresh_start=allow_fresh)
    if restored is not None:
        carry = restored.state
        train_iter.set_state(restored.data_state)
        log.info("resumed from checkpoint step %d in %s", restored.step, ckpt.directory)
    elif c.init_from:
        # Resuming this run's own checkpoint takes precedence over a warm start.
        carry["train_state"] = warm_start(state, c.init_from)
    if is_main:
        # A fresh start drops the records of a run killed before its first checkpoint; over
        # damaged checkpoints (allow_fresh_start) the old file is kept beside them.
        damaged = restored is None and ckpt.damaged_steps()
        if damaged:
            log.warning("training from step 0 because checkpoint.allow_fresh_start is set")
        backup = ckpt.aside_path("metrics.jsonl") if damaged else ""
        supersede_metrics(workdir, restored.step if restored else 0, backup=backup)
    return carry, restored


def _best_state(ckpt, stopper, state, pending, end, final, writer) -> TrainState:
    """The state the test split is evaluated on: with early stopping the best checkpoint by the
    validation metric (and its step logged), otherwise the last weights."""
    if stopper is None:
        return state
    best = ckpt.restore(stopper.best_step, abstract_like(make_carry(state, pending, 0)))
    final["early_stopping/best_step"] = stopper.best_step
    final["early_stopping/stopped_at"] = end
    writer.write(end, {k: v for k, v in final.items() if k.startswith("early_stopping/")})
    return best.state["train_state"]


def _format_eval(scalars: dict[str, float]) -> str:
    keys = [k for k in scalars if k.endswith(("/loss", "/accuracy", "/f1_macro"))]
    return " ".join(f"{k}={scalars[k]:.4f}" for k in keys)


def _class_weights(
    c: ml_collections.ConfigDict, opts: DataOptions, info: DatasetInfo
) -> tuple[float, ...]:
    """Per-class loss weights: none, given, or balanced n / (K * n_k) from the train split."""
    mode = c.loss.class_weighting
    if mode == "none":
        return ()
    if mode == "given":
        return tuple(float(w) for w in c.loss.class_weights)
    counts = data_lib.train_class_counts(opts, info.num_classes)
    return metrics_lib.balanced_class_weights(counts)


def _create_early_stopping(c: ml_collections.ConfigDict, restored: Any) -> EarlyStopping | None:
    """None when off; resumed runs continue the saved tracker."""
    e = c.early_stopping
    if e.patience <= 0:
        return None
    saved = restored.meta.get("early_stopping") if restored is not None else None
    if saved:
        return EarlyStopping.from_dict(saved)
    return EarlyStopping(mode=c.checkpoint.best_mode, patience=e.patience, min_delta=e.min_delta)


def _create_checkpointer(c: ml_collections.ConfigDict, workdir: str) -> Checkpointer:
    k = c.checkpoint
    return Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep=k.keep,
        keep_best=k.keep_best,
        best_metric=k.best_metric,
        best_mode=k.best_mode,
        async_save=k.async_save,
    )


def _prepare_workdir(workdir: str, run_meta: dict[str, Any] | None = None) -> None:
    """Creates the workdir; with `run_meta`, writes config.json and provenance.json."""
    try:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        if run_meta is not None:
            write_json(os.path.join(workdir, "config.json"), run_meta["config"])
            write_json(os.path.join(workdir, "provenance.json"), run_meta["provenance"])
    except OSError as e:
        raise CheckpointError(f"workdir {workdir} is not writable: {e}") from e


def summary_line(result: RunResult) -> str:
    """The one `done: ...` line the CLI prints at the end of a run."""
    final = result.metrics
    keys = ("train/loss", "validation/accuracy", "test/loss", "test/accuracy", "test/f1_macro")
    parts = [f"{k}={final[k]:.4f}" for k in keys if k in final]
    partial = f" (first {result.eval_steps} eval batches)" if result.eval_steps else ""
    seconds = final["time/train_seconds"]
    return f"done: {result.steps} steps in {seconds:.1f}s; " + " ".join(parts) + partial
