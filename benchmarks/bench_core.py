"""Core harness figures (issue 2): CLI start-up, a smoke run end to end, and the per-trial overhead.

    python benchmarks/bench_core.py            # prints a Markdown table

Overhead per trial = total trial time - fit - predict - latency measurement (the latency measurement
is itself a measured output, reported on its own line).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    harness = str(Path(sys.executable).with_name("harness"))
    rows = [
        ("`harness --help` (median of 5)", f"{wall([harness, '--help']):.2f} s"),
        ("`harness list` (median of 5)", f"{wall([harness, 'list']):.2f} s"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([harness, "run", "--methods", "resnet", "--datasets", "synthetic", "--profile", "smoke",
                        "--runs-dir", tmp], check=True, capture_output=True)
        rows.append(("`harness run --methods resnet --datasets synthetic --profile smoke`",
                     f"{time.perf_counter() - t0:.1f} s"))
        (result_path,) = Path(tmp).rglob("result.json")
        record = json.loads(result_path.read_text())
        t = record["timings"]
        overhead = record["total_seconds"] - record["fit_seconds"] - t["predict_seconds"] - t["latency_seconds"]
        rows.append(("harness overhead in that trial (load, seeding, metrics, writes)", f"{overhead:.2f} s"))
        rows.append(("latency measurement in that trial (torch b1 + b64, ONNX export + b1 + b64)",
                     f"{t['latency_seconds']:.2f} s"))
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
