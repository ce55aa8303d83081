"""Does each step of an ablation help? Paired tests between consecutive rows (issue 6: DiffMIC's Table 2).

For each dataset under RUNS_DIR, compares row i+1 with row i of the given method order on the shared test
images and seeds, with the report's tests (paired bootstrap of the Macro-F1 difference over test images,
paired t-test of it over seeds, McNemar for accuracy), and prints a Markdown table:

    python benchmarks/ablation_steps.py /tmp/lb --methods diffmic-basic,diffmic-c1,diffmic-c2,diffmic
    python benchmarks/ablation_steps.py runs/iois-table --methods resnet,iois-offline,iois-ois,iois

A method that takes no sampler (its rows say ``-``, e.g. the IOIS variants) is compared as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.results.stats import ALPHA, compare, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--methods", required=True, help="the ablation's rows in order, comma-separated")
    parser.add_argument("--sampler", default="uniform")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    summary = summarise(args.runs_dir, replicates=args.bootstrap, only={"method": set(methods)})
    datasets = sorted({d for d, _, _ in summary.details})
    if not datasets:
        raise SystemExit(f"no finished trial of {', '.join(methods)} under {args.runs_dir}")
    print("| dataset | step | seeds | Δ Macro-F1 [95% CI] | p (bootstrap) | p (seeds) | Δ accuracy | p (McNemar) |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for before, after in zip(methods, methods[1:]):
            a, b = (summary.details.get((dataset, m, args.sampler)) or summary.details.get((dataset, m, "-"))
                    for m in (after, before))
            if a is None or b is None:
                print(f"| {dataset} | {before} → {after} | missing | | | | | |")
                continue
            c = compare(a, b, replicates=args.bootstrap)
            if "f1_diff" not in c:
                print(f"| {dataset} | {before} → {after} | no paired seeds | | | | | |")
                continue
            star = lambda p: " *" if p < ALPHA else ""  # noqa: E731
            seed_p = "–" if c["f1_seed_p"] is None else f"{c['f1_seed_p']:.3g}{star(c['f1_seed_p'])}"
            print(f"| {dataset} | {before} → {after} | {len(c['paired_seeds'])} | {c['f1_diff']:+.3f} "
                  f"[{c['f1_diff_low']:+.3f}, {c['f1_diff_high']:+.3f}] | {c['f1_p']:.3g}{star(c['f1_p'])} | "
                  f"{seed_p} | {c['acc_diff']:+.3f} | {c['mcnemar_p']:.3g}{star(c['mcnemar_p'])} |")


if __name__ == "__main__":
    main()
