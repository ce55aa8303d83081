"""First and second load time of the real HAM10000 sample and of RetinaMNIST (issues 4 and 14).

    python benchmarks/bench_datasets.py --data-dir ../shared/data [--repeats 3]

"First" is a load into an empty cache directory (read the metadata, decode, resize, split, compute the ids and
the fingerprint, write the cache); "second" is the next load with the same options (read the metadata, stat the
files, memory-map the cache, read ids, fingerprint and warnings from it: no pixel is hashed again). Each repeat
uses a fresh temporary cache; the median and the range are printed, and whether both loads gave the same
fingerprint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import DatasetRequest  # noqa: E402
from harness.run.config import build_dataclass  # noqa: E402


def cases(data_dir: Path):
    from plugins.datasets import ham10000, medmnist

    yield ("ham10000 sample (70 of 10,015 listed; skip_missing) at 224 px, split grouped",
           ham10000.load, build_dataclass(ham10000.HAM10000Options, {"size": 224, "skip_missing": True,
                                                                     "split_seed": 0}, "h"),
           data_dir / "ham10000_subset")
    for size in (28, 64, 224):
        how = "as stored" if size == 28 else "resized"
        yield (f"retinamnist (1,600 images, 28 px npz) {how} at {size} px, official split",
               lambda request: medmnist.load(request, "retinamnist"),
               build_dataclass(medmnist.MedMNISTOptions, {"size": size}, "r"), data_dir)


def timed(load, request):
    start = time.perf_counter()
    data = load(request)
    elapsed = time.perf_counter() - start
    n = len(data.train) + len(data.val) + len(data.test)
    return elapsed, n, isinstance(data.train.images, np.memmap), data.train.images.shape[1:], data.fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("HARNESS_TEST_DATA", Path(__file__).resolve().parents[2]
                                                    / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the skip_missing count is expected here
    print("| dataset | images | shape | first load (s) | second load (s) | second is memory-mapped | same fingerprint |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, load, options, data_dir in cases(args.data_dir):
        first, second, same = [], [], set()
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                request = DatasetRequest(options=options, seed=0, data_dir=data_dir, cache_dir=Path(cache))
                t1, n, _, shape, print1 = timed(load, request)
                t2, _, mapped, _, print2 = timed(load, request)
                first.append(t1)
                second.append(t2)
                same.add(print1 == print2)
        fmt = lambda xs: f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"  # noqa: E731
        print(f"| {label} | {n} | {tuple(shape)} | {fmt(first)} | {fmt(second)} | {mapped} | {all(same)} |")


if __name__ == "__main__":
    main()
