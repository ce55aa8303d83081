"""How long ``harness report`` takes on a leaderboard of realistic size, without training anything.

Writes fake trial folders (``result.json`` + ``predictions.parquet``, the files ``harness run`` writes)
for M methods x S seeds on D datasets of N test images and K classes, then times
``harness.report.write_report`` (reading the folder once, the statistics with rank bands, Markdown, HTML,
Parquet, SVG, and for 2+ datasets the Friedman / Nemenyi analysis and its diagram).

    python benchmarks/bench_report.py --methods 17 --seeds 3 --datasets 2 --images 400 --classes 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import accuracy_score, f1_score

from harness.contract.result import TrialResult
from harness.report import write_report
from harness.results.summary import Settings
from harness.store import write_result


def fake_runs(root: Path, methods: int, seeds: int, images: int, classes: int, datasets: int = 1) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, images)
    for d in range(datasets):
        for m in range(methods):
            fake_method(root, f"bench{d}", m, methods, seeds, labels, classes, rng)


def fake_method(root, dataset, m, methods, seeds, labels, classes, rng) -> None:
    images = len(labels)
    skill = 0.3 + 0.6 * m / max(methods - 1, 1)
    for seed in range(seeds):
        pred = np.where(rng.random(images) < skill, labels, rng.integers(0, classes, images))
        folder = root / f"method{m}-{dataset}-uniform-s{seed}"
        folder.mkdir(parents=True)
        probs = np.full((images, classes), 0.1 / classes)
        probs[np.arange(images), pred] += 0.9
        columns = {"index": np.arange(images), "label": labels, "pred": pred}
        columns.update({f"prob_{k}": probs[:, k] for k in range(classes)})
        pl.DataFrame(columns).write_parquet(folder / "predictions.parquet")
        write_result(folder, TrialResult(
            key=folder.name, method=f"method{m}", dataset=dataset, sampler="uniform", seed=seed,
            profile="cpu", status="ok", num_classes=classes, classes=[f"c{k}" for k in range(classes)],
            config={"lr": 1e-3}, git_commit="bench", harness_version="bench", params=1_000_000,
            metrics={"macro_f1": f1_score(labels, pred, average="macro", labels=range(classes), zero_division=0),
                     "accuracy": accuracy_score(labels, pred)},
            latency={"ms_per_image_b1": float(rng.uniform(0.5, 50))},
        ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", type=int, default=14)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", type=int, default=1)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        fake_runs(root, args.methods, args.seeds, args.images, args.classes, args.datasets)
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            written = write_report(root, Path(tmp) / f"site{i}", settings=Settings(replicates=args.bootstrap))
            times.append(time.perf_counter() - t0)
        size = written["index.html"].stat().st_size
    print(f"{args.methods} methods x {args.seeds} seeds x {args.datasets} dataset(s), {args.images} test images, {args.classes} classes, "
          f"{args.bootstrap} bootstrap resamples: report in {statistics.median(times):.2f} s "
          f"(median of {args.repeats}; min {min(times):.2f}, max {max(times):.2f}); index.html {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
