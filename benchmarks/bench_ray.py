"""Ray fan-out figures (issue 3): the fixed overhead of ``--executor ray`` and the throughput of
parallel trials against the local executor, each measured as the wall time of a whole ``harness run``
command (a fresh results folder every time, so nothing is skipped).

    python benchmarks/bench_ray.py overhead      # 4 smoke trials: local vs ray (sequential and 2-wide)
    python benchmarks/bench_ray.py throughput    # 4 cpu-profile trials: local sequential vs ray, 1 CPU each
    python benchmarks/bench_ray.py all --json benchmarks/bench_ray.json
    python benchmarks/bench_ray.py throughput --epochs 1   # shorter trials, for a heavily loaded machine
    python benchmarks/bench_ray.py throughput --methods all --seeds 0   # the default run's 14 trials

The machine's load (``uptime``) is printed before and after each figure: on a shared machine the
numbers are noisy, re-measure on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEEDS = "0,1,2,3"
METHODS = "resnet"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def timed_run(args: list[str], workdir: Path) -> dict:
    """Wall time of one ``harness run`` in a fresh folder, and the trials' own total_seconds."""
    runs = workdir / "runs"
    command = ["harness", "run", "--methods", METHODS, "--datasets", "synthetic", "--seeds", SEEDS,
               "--runs-dir", str(runs), *args]
    expected = len(METHODS.split(",")) * len(SEEDS.split(","))
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(command)}")
    records = [json.loads(p.read_text()) for p in runs.rglob("result.json")]
    records = [r for r in records if "schema" in r]
    failed = [r["key"] for r in records if r["status"] != "ok"]
    if len(records) != expected or failed:
        raise SystemExit(f"expected {expected} finished trials, found {len(records)} (failed: {failed}): "
                         f"{' '.join(command)}")
    return {
        "command": " ".join("DIR" if c == str(runs) else c for c in command),
        "wall_s": round(wall, 1),
        "trials": len(records),
        "trials_per_hour": round(len(records) * 3600 / wall, 1),
        "sum_trial_s": round(sum(r["total_seconds"] for r in records), 1),
        "sum_fit_s": round(sum(r["fit_seconds"] for r in records), 1),
    }


ONLY: list[str] = []


def registered_methods() -> list[str]:
    """Every registered method, as ``harness list methods --json`` gives them (what ``harness run`` runs)."""
    listing = subprocess.run(["harness", "list", "methods", "--json"], capture_output=True, text=True, check=True)
    return [m["name"] for m in json.loads(listing.stdout)]


def figure(name: str, variants: dict[str, list[str]]) -> dict:
    out = {"figure": name, "uptime_before": uptime(), "cpus": os.cpu_count(), "runs": {}}
    for label, args in variants.items():
        if ONLY and not any(part in label for part in ONLY):
            continue
        work = Path(tempfile.mkdtemp(prefix="bench-ray-" + "".join(c if c.isalnum() else "-" for c in label)))
        try:
            if "ray" in args:
                args = [*args, "--ray-storage", str(work / "ray")]
            out["runs"][label] = timed_run(args, work)
            print(f"{name:10s} {label:28s} {out['runs'][label]}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out["uptime_after"] = uptime()
    return out


def overhead() -> dict:
    smoke = ["--profile", "smoke", "--no-onnx"]
    return figure("overhead", {
        "local (2 threads)": [*smoke, "--executor", "local"],
        "ray sequential (2 CPUs)": [*smoke, "--executor", "ray", "--cpus-per-trial", "2", "--max-concurrent", "1"],
        "ray 2-wide (1 CPU each)": [*smoke, "--executor", "ray", "--cpus-per-trial", "1"],
    })


def throughput(epochs: int | None = None) -> dict:
    extra = [a for m in METHODS.split(",") for a in ("--set", f"{m}.epochs={epochs}")] if epochs else []
    return figure("throughput", {
        "local sequential": ["--profile", "cpu", *extra, "--executor", "local"],
        "ray 1 CPU/trial": ["--profile", "cpu", *extra, "--executor", "ray", "--cpus-per-trial", "1"],
    })


def main() -> None:
    global METHODS, SEEDS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "throughput", "all"])
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    parser.add_argument("--epochs", type=int, help="throughput: override each method's cpu-profile epochs (12 "
                                                   "for resnet), for a loaded machine; leave out for the real figure.")
    parser.add_argument("--methods", default=METHODS, help="methods to run (comma-separated), or 'all' for every "
                                                               "registered method (default: resnet)")
    parser.add_argument("--seeds", default=SEEDS, help=f"seeds (default: {SEEDS})")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="Run only the variants whose label contains TEXT (repeatable), e.g. --only ray.")
    args = parser.parse_args()
    METHODS = ",".join(registered_methods()) if args.methods == "all" else args.methods
    SEEDS = args.seeds
    ONLY.extend(args.only)
    results = []
    if args.what in ("overhead", "all"):
        results.append(overhead())
    if args.what in ("throughput", "all"):
        results.append(throughput(args.epochs))
    for result in results:
        print(f"\n{result['figure']}: before: {result['uptime_before']}\n  after: {result['uptime_after']}")
        if not result["runs"]:
            continue
        base = next(iter(result["runs"].values()))
        for label, row in result["runs"].items():
            print(f"  {label:28s} wall {row['wall_s']:7.1f}s  {row['trials_per_hour']:7.1f} trials/h  "
                  f"x{base['wall_s'] / row['wall_s']:.2f}  (sum of trial times {row['sum_trial_s']}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
