"""DiffMIC budget study (issue 16, "Convergence, shown"): Macro-F1 against the training budget, 3 seeds.

For each method and each budget B (optimizer steps of the denoiser's stage, ``steps=B``, at least
``min_epochs`` epochs; ``diffmic-basic`` trains its network for the DCG warm-up + as many epochs, the same DCG
schedule as the diffusion rows), the trials run through ``harness run`` (the same code path, stored and
resumable in ``--runs-dir``; experiment ``budget-B``), with the ``cpu`` profile otherwise. The table gives, per method and budget, the mean and standard deviation over seeds of:
the chain's validation Macro-F1 at the selected checkpoint and its prior's (the DCG alone, at the same
checkpoint), the mean validation Macro-F1 over the last fifth of the learning curve, test Macro-F1 and
balanced accuracy, and the fit time (one torch thread per trial). The plateau is the smallest budget whose mean
*validation* Macro-F1 is within ``--tolerance`` of the best budget's, on the selected checkpoint and on the end of
the curve (the selected checkpoint is the best of more checks the longer the budget, so it is biased upwards).

    python benchmarks/diffmic_budget.py --data-dir ../shared/data                       # the study (hours)
    python benchmarks/diffmic_budget.py --data-dir ../shared/data --budgets 17,34 --seeds 0 --methods diffmic-c1 \\
        --runs-dir /tmp/budget-check --set diffmic-c1.dcg_warmup_epochs=1 --set diffmic-c1.min_epochs=1   # a check
    python benchmarks/diffmic_budget.py --runs-dir runs/diffmic-budget --report-only    # the table again

``--reuse runs/retinamnist`` counts an experiment's ``cpu``-profile trials at the budget they ran: the published
rows are the profile's 800-step point, so the study can run ``--budgets 200,400,1600`` and make the table with
``--report-only --budgets 200,400,800,1600 --reuse runs/retinamnist``.

``--jobs 2`` runs two ``harness run`` processes at once (one thread each): on this 2-core machine, twice
the throughput when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_METHODS = ("diffmic-basic", "diffmic-c1", "diffmic")
COLUMNS = (("val_chain", "val Macro-F1"), ("val_prior", "val prior Macro-F1"),
           ("val_end", "val Macro-F1, last fifth"), ("test_macro_f1", "test Macro-F1"),
           ("test_bacc", "test B-ACC"), ("fit_s", "fit s"))


def experiment(budget: int) -> str:
    return f"budget-{budget}"


def command(args, method: str, budget: int) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--methods", method, "--datasets", args.dataset,
           "--seeds", args.seeds, "--profile", "cpu", "--runs-dir", str(args.runs_dir),
           "--experiment", experiment(budget), "--threads", str(args.threads), "--no-onnx",
           "--set", f"{method}.steps={budget}"]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    for item in args.set:
        if item.split(".", 1)[0] in (method, "dataset", args.dataset):
            cmd += ["--set", item]
    return cmd


def run(args) -> None:
    jobs = [(method, budget) for budget in args.budgets for method in args.methods]

    def one(job):
        method, budget = job
        log = Path(args.runs_dir) / "logs" / f"{method}-b{budget}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            code = subprocess.call(command(args, method, budget), stdout=out, stderr=subprocess.STDOUT)
        print(f"{method} budget {budget}: {'ok' if code == 0 else f'exit {code}, see {log}'}", flush=True)
        return code

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = list(pool.map(one, jobs))
    if any(codes):
        print("some trials failed: the table below leaves them out", file=sys.stderr)


def stored(args):
    """(result, budget, folder) of every stored trial: the study's own (``RUNS_DIR/budget-B``), then each ``--reuse``
    experiment's ``cpu``-profile trials, at the budget their configuration ran (``steps``)."""
    for path in sorted(Path(args.runs_dir).glob("budget-*/*/result.json")):
        yield json.loads(path.read_text()), int(path.parent.parent.name.split("-", 1)[1]), path.parent
    for folder in args.reuse:
        for path in sorted(Path(folder).glob("*/result.json")):
            result = json.loads(path.read_text())
            if result.get("profile") == "cpu" and "steps" in result.get("config", {}):
                yield result, int(result["config"]["steps"]), path.parent


def collect(args) -> dict[tuple[str, int], list[dict]]:
    from harness.contract.curves import end_of_curve
    from harness.store import read_curve

    rows: dict[tuple[str, int], list[dict]] = {}
    for result, budget, folder in stored(args):
        if result.get("status") != "ok" or result.get("dataset") != args.dataset:
            continue
        if result.get("method") not in args.methods or str(result.get("seed")) not in args.seeds.split(","):
            continue
        if budget not in args.budgets:
            continue
        if any(t["seed"] == result["seed"] for t in rows.get((result["method"], budget), [])):
            print(f"{result['method']} seed {result['seed']} at {budget} steps is stored twice: the first is used")
            continue
        notes, metrics = result.get("notes", {}), result.get("metrics", {})
        rows.setdefault((result["method"], budget), []).append({
            "seed": result["seed"], "val_chain": notes.get("val_macro_f1"),
            "val_prior": notes.get("val_prior_macro_f1"),
            "val_end": end_of_curve(read_curve(folder, result)[0] or [] if result.get("curve") else [], "val_macro_f1"),
            "test_macro_f1": metrics.get("macro_f1"),
            "test_bacc": metrics.get("balanced_accuracy"), "fit_s": result.get("fit_seconds"),
            "selected_epoch": notes.get("selected_epoch")})
    return rows


def summary(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}" if mean < 10 else f"{mean:.0f}"
    sd = statistics.stdev(values)
    return f"{mean:.3f} ± {sd:.3f}" if mean < 10 else f"{mean:.0f} ± {sd:.0f}"


def report(args) -> str:
    from harness.contract.curves import plateau

    rows = collect(args)
    lines = [f"DiffMIC budget study on {args.dataset} (cpu profile; budget = optimizer steps of the denoiser's stage; "
             f"mean ± sd over seeds {args.seeds})", "",
             "| method | budget | seeds | " + " | ".join(name for _, name in COLUMNS) + " | chain >= prior |",
             "|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
    plateaus = {}
    for method in args.methods:
        means, ends = {}, {}
        for budget in sorted(args.budgets):
            trials = rows.get((method, budget), [])
            if not trials:
                continue
            cells = [summary([t[key] for t in trials]) for key, _ in COLUMNS]
            if method == "diffmic-basic":
                cells[1], above = "", ""  # no prior apart from the classifier itself
            else:
                above = f"{sum(t['val_chain'] >= t['val_prior'] for t in trials)}/{len(trials)}"
            lines.append(f"| {method} | {budget} | {len(trials)} | " + " | ".join(cells) + f" | {above} |")
            means[budget] = statistics.fmean(t["val_chain"] for t in trials)
            if all(t["val_end"] is not None for t in trials):
                ends[budget] = statistics.fmean(t["val_end"] for t in trials)
        plateaus[method] = [plateau(by, args.tolerance) for by in (means, ends)]
    lines.append("")
    for method, (best_check, end) in plateaus.items():
        lines.append(f"- {method}: plateau (mean validation Macro-F1 within {args.tolerance} of the best budget's) "
                     f"at {best_check} steps on the selected checkpoint, "
                     + (f"at {end} steps on the last fifth of the curve" if end else "no learning curve to place it on")
                     + " (the selected checkpoint is the best of more checks the longer the budget)")
    text = "\n".join(lines) + "\n"
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps(
            {f"{m}|{b}": trials for (m, b), trials in sorted(rows.items())}, indent=1))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--budgets", default="200,400,800,1600", help="optimizer steps of the denoiser's stage")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="retinamnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", default="runs/diffmic-budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    parser.add_argument("--jobs", type=int, default=1, help="harness run processes at once")
    parser.add_argument("--set", action="append", default=[], help="extra SCOPE.KEY=VALUE overrides")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--reuse", action="append", default=[], metavar="EXPERIMENT_DIR",
                        help="an experiment folder whose cpu-profile trials count at the budget they ran (e.g. "
                             "runs/retinamnist: the published rows are the profile's 800-step point)")
    args = parser.parse_args()
    args.methods = tuple(m for m in args.methods.split(",") if m)
    args.budgets = [int(b) for b in args.budgets.split(",") if b]
    if not args.report_only:
        run(args)
    print(report(args))


if __name__ == "__main__":
    main()
