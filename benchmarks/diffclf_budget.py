"""Budget study of the diffusion classifier (issue 16, "Convergence, shown"): Macro-F1 against training budget.

Runs ``diffclf`` (``cpu`` profile) on a dataset for several budgets in optimizer steps (``diffclf.steps``) and
seeds, through the harness's own run path (``run_trial``: same data, splits, selection on validation, stored
results and learning curves), into ``RUNS_DIR/diffclf-budget-<dataset>``; then prints one Markdown row per
budget: the steps and epochs actually run, fit and trial minutes, the best validation Macro-F1, the mean
validation Macro-F1 over the last fifth of the learning curve, the test Macro-F1 / B-ACC (mean ± standard
deviation over seeds), and how many trials say ``budget_limited`` (their validation Macro-F1 still rose over
the last fifth of their budget). Finished trials are skipped, so the command resumes; ``--table-only`` prints
the table from what is stored. The plateau is the smallest budget whose mean is within ``--tolerance`` of the
best mean (on each validation column and on test). The best validation check is biased upwards by the number
of checks (a longer budget validates more often on the same small split); the end of the curve is not.

    python benchmarks/diffclf_budget.py --data-dir ../shared/data --executor ray           # the study (lead)
    python benchmarks/diffclf_budget.py --data-dir ../shared/data --budgets 20,40 --seeds 0 --runs-dir /tmp/b \
        --set min_epochs=1 --set votes=5                                                 # a quick check
    python benchmarks/diffclf_budget.py --runs-dir runs --table-only

Two trials at a time on two cores: ``--executor ray --max-concurrent 2`` (one torch thread each).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

DEFAULT_BUDGETS = "250,500,1000,2000,4000,8000"


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def run(args) -> None:
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, cached_plugins
    from harness.run.trial import Experiment, expand

    _, registry = cached_plugins((), ())
    trials = []
    for budget in args.budgets:
        experiment = Experiment(methods=("diffclf",), datasets=(args.dataset,), seeds=tuple(args.seeds),
                                profile="cpu", overrides={"diffclf": {"steps": budget, **args.overrides}},
                                name=args.experiment)
        trials += expand(experiment, registry)
    settings = RunSettings(runs_dir=args.runs_dir, data_dir=args.data_dir, threads=1,
                           latency=LatencySettings(onnx=False))
    print(f"{len(trials)} trial(s) -> {Path(args.runs_dir) / args.experiment}", flush=True)
    if args.executor == "ray":
        from harness.run.executors.ray import RayOptions, run_ray

        summary = run_ray(trials, settings, RayOptions(cpus_per_trial=1.0, max_concurrent=args.max_concurrent))
    else:
        from harness.run.executors.local import run_local

        summary = run_local(trials, settings)
    if summary.failed:
        print(f"{len(summary.failed)} trial(s) failed: {', '.join(summary.failed)}", flush=True)


def late_val(folder: Path, result) -> float | None:
    """Mean validation Macro-F1 over the last fifth of the trial's learning curve: where the curve ends, unlike
    the best check, which rises with the number of checks on a small validation split."""
    from harness.contract.curves import end_of_curve
    from harness.store import read_curve

    curve, _ = read_curve(folder, result) if result.get("curve") else (None, None)
    return end_of_curve(curve or [], "val_macro_f1")


def table(runs_dir: Path, experiment: str, tolerance: float) -> None:
    from harness.contract.curves import plateau
    from harness.store import load_runs

    rows: dict[int, list] = {}
    runs = load_runs(Path(runs_dir) / experiment, only={"method": {"diffclf"}})
    for i in runs.ok():
        result = runs.records[i]
        rows.setdefault(int(result["config"]["steps"]), []).append((result, late_val(runs.folders[i], result)))
    if not rows:
        raise SystemExit(f"no finished diffclf trial under {Path(runs_dir) / experiment}")
    print("| budget (steps) | steps run | epochs | seeds | fit min | trial min | best val Macro-F1 | "
          "val Macro-F1, last fifth | test Macro-F1 | test B-ACC | budget-limited |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    means = {}
    for budget in sorted(rows):
        pairs = sorted(rows[budget], key=lambda pair: pair[0]["seed"])
        results, late = [r for r, _ in pairs], [v for _, v in pairs if v is not None]
        notes = [r.get("notes", {}) for r in results]
        val = [n["best_val_macro_f1"] for n in notes if n.get("best_val_macro_f1") is not None]
        test = [r["metrics"]["macro_f1"] for r in results]
        bacc = [r["metrics"]["balanced_accuracy"] for r in results]
        flags = [n.get("budget_limited") for n in notes]
        limited = f"{sum(f is True for f in flags)}/{len(flags)}" + (
            f" ({sum(f is None for f in flags)} too short to tell)" if None in flags else "")
        means[budget] = (statistics.mean(val) if val else float("nan"), statistics.mean(test),
                         statistics.mean(late) if late else float("nan"))
        print(f"| {budget} | {notes[0].get('steps', '?')} | {notes[0].get('epochs', '?')} | "
              f"{','.join(str(r['seed']) for r in results)} | "
              f"{statistics.mean(r['fit_seconds'] for r in results) / 60:.1f} | "
              f"{statistics.mean(r['total_seconds'] for r in results) / 60:.1f} | {_mean_sd(val)} | "
              f"{_mean_sd(late)} | {_mean_sd(test)} | {_mean_sd(bacc)} | {limited} |")
    for i, name in enumerate(("validation (best check)", "test", "validation (last fifth of the curve)")):
        budget = plateau({b: m[i] for b, m in means.items()}, tolerance)
        if budget is None:
            print(f"\nplateau on {name}: no trial has it", end="")
            continue
        best = max(m[i] for m in means.values() if not math.isnan(m[i]))
        print(f"\nplateau on {name}: {budget} steps (the smallest budget within {tolerance} of the best mean "
              f"Macro-F1, {best:.3f})", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="retinamnist")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--experiment", default=None, help="default: diffclf-budget-<dataset>")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="optimizer steps, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another diffclf config override for every trial (TOML value), e.g. conditioning=\"add\"")
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    from harness.run.config import parse_value

    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.experiment = args.experiment or f"diffclf-budget-{args.dataset}"
    if not args.table_only:
        run(args)
    table(args.runs_dir, args.experiment, args.tolerance)


if __name__ == "__main__":
    main()
