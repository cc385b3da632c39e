"""The research-tool commands of `python -m jaxtrain`: bench, estimate, sweep, compare,
reproduce, drift and diverge (jax and the library are imported only when a command runs)."""

import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxtrain.cli import options as opts
from jaxtrain.cli.config_file import check_config_file, raised_by_config_file
from jaxtrain.errors import EXIT_DIFFER, EXIT_DRIFT, EXIT_NOT_REPRODUCED


def bench_command(args: list[str]) -> None:
    from jaxtrain.tools.bench import format_benchmark, run_benchmark

    out = opts.OUT.value or None
    result = run_benchmark(
        opts.load_config(),
        steps=opts.STEPS.value,
        warmup=opts.WARMUP.value,
        out_json=out,
        repeats=opts.REPEATS.value,
    )
    print(format_benchmark(result))
    if out:
        print(f"wrote {out}")


def estimate_command(args: list[str]) -> None:
    from jaxtrain.tools.estimate import estimate_config_cost, format_estimate_report

    config = opts.load_config()
    result = estimate_config_cost(
        config,
        hardware=opts.HARDWARE.value,
        price_per_hour=opts.PRICE.value,
        mfu=opts.MFU.value,
        compare_to=opts.COMPARE_TO.value,
        compare_price=opts.COMPARE_PRICE.value,
        num_devices=opts.NUM_DEVICES.value or None,
    )
    print(format_estimate_report(config, result))


def sweep_command(args: list[str]) -> None:
    from jaxtrain.tools.sweep import run_sweep_from_flags

    run_sweep_from_flags(
        config_file=config_flags.get_config_filename(flags.FLAGS["config"]),
        workdir=opts.WORKDIR.value,
        grid=opts.GRID.value,
        random=opts.RANDOM.value,
        trials=opts.TRIALS.value,
        sweep_seed=opts.SWEEP_SEED.value,
        parallel=opts.PARALLEL.value,
        metric=opts.METRIC.value,
        mode=opts.MODE.value,
        config_overrides=opts.config_overrides(sys.argv),
    )
    print(f"[sweep] summary: {os.path.join(opts.WORKDIR.value, 'summary.md')}", flush=True)


def compare_command(args: list[str]) -> None:
    from jaxtrain.tools.compare import Arm, arm_b_config, run_compare

    config_a, b_file, overrides = (
        opts.load_config(),
        opts.CONFIG_B.value or "",
        opts.config_overrides(sys.argv),
    )
    if b_file and (problem := check_config_file(b_file)):
        opts.fail(problem.replace("--config ", "--config_b ", 1))
    try:
        config_b = arm_b_config(config_a, config_b_file=b_file, b=opts.B.value,
                                config_overrides=overrides)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the B file's own errors, whatever their type
        problem = raised_by_config_file(e, b_file) if b_file else None
        if problem is None or os.environ.get("JAXTRAIN_DEBUG"):
            raise
        opts.fail(problem.replace("--config ", "--config_b ", 1))
    path_a = config_flags.get_config_filename(flags.FLAGS["config"])
    label_a = " ".join([path_a, *overrides])
    label_b = " ".join([b_file, *overrides]) if b_file else "A + " + " ".join(opts.B.value)
    report = run_compare(Arm(label_a, config_a), Arm(label_b, config_b), opts.WORKDIR.value,
                         seeds=opts.SEEDS.value, progress=opts.PROGRESS.value)  # fmt: skip
    for metric, s in report["final"].items():
        print(f"{metric}: A {s['mean_a']:.4g} ± {s['std_a']:.2g}, B {s['mean_b']:.4g} ± "
              f"{s['std_b']:.2g}; B - A = {s['diff_mean']:.4g} [{s['ci_low']:.4g}, "
              f"{s['ci_high']:.4g}]; p = {s['p_t']:.3g} (t), "
              f"{s['p_sign_flip']:.3g} (sign-flip)")  # fmt: skip
    if report:  # process 0
        print(f"[compare] report: {os.path.join(opts.WORKDIR.value, 'compare.md')}", flush=True)


def reproduce_command(args: list[str]) -> None:
    from jaxtrain.tools.reproduce import reproduce, results_table, write_table

    if opts.TABLE.value:
        if len(args) > 1:
            opts.fail(
                f"reproduce --table takes at most one experiments folder; {opts.see('reproduce')}"
            )
        table = results_table(args[0] if args else "experiments")
        if opts.OUT.value:
            write_table(opts.OUT.value, table)
            print(f"wrote the results table into {opts.OUT.value}")
        else:
            print(table, end="")
        return
    if len(args) != 1:
        opts.fail(f"reproduce takes one experiment file; {opts.see('reproduce')}")
    if problem := check_config_file(args[0]):
        opts.fail(problem.removeprefix("--config "))
    name = os.path.splitext(os.path.basename(args[0]))[0]
    workdir = opts.WORKDIR.value or os.path.join("runs", "reproduce", name)
    try:
        out = reproduce(
            args[0], workdir=workdir, seeds=opts.SEEDS.value, progress=opts.PROGRESS.value
        )
    except Exception as e:  # noqa: BLE001 - the experiment file's own errors
        problem = raised_by_config_file(e, args[0])
        if problem is None or os.environ.get("JAXTRAIN_DEBUG"):
            raise
        opts.fail(problem.removeprefix("--config "))
    e = out.experiment.expected
    verdict = "PASS" if out.passed else "FAIL"
    print(f"{verdict}: {name} {e.metric} = {out.measured:.6g}, expected {e.describe()} "
          f"(declared on {e.hardware}); recorded in {out.results_file}", flush=True)  # fmt: skip
    if not out.passed:
        sys.exit(EXIT_NOT_REPRODUCED)


def drift_command(args: list[str]) -> None:
    import jax

    from jaxtrain.tools.drift import format_report, run_drift

    report = run_drift(
        opts.WORKDIR.value,
        opts.DATA.value,
        threshold=opts.THRESHOLD.value,
        transforms=opts.TRANSFORM.value,
        out=opts.OUT.value,
    )
    if jax.process_index() == 0:
        print(format_report(report), flush=True)
    if report["flagged"]:
        sys.exit(EXIT_DRIFT)


def diverge_command(args: list[str]) -> None:
    from jaxtrain.tools.diverge import diverge, format_report, report_json
    from jaxtrain.writers import write_json

    if len(args) != 2:
        opts.fail(f"diverge takes two run directories, got {len(args)}; {opts.see('diverge')}")
    result = diverge(args[0], args[1])
    if opts.OUT.value:
        write_json(opts.OUT.value, report_json(result))
    print(format_report(result), flush=True)
    if result.verdict != "identical":
        sys.exit(EXIT_DIFFER)
