"""Does each step of an ablation help? Paired tests between consecutive rows (issue 6: DiffMIC's Table 2).

For each dataset under RUNS_DIR, compares row i+1 with row i of the given method order on the shared test
images and seeds with the report's tests: the primary two-level paired bootstrap of the Macro-F1 difference
(test images and training seeds; its p adjusted with Holm over the steps of a dataset), and the secondary
t-test over seeds and McNemar per seed. Prints a Markdown table:

    python benchmarks/ablation_steps.py /tmp/lb --methods diffmic-basic,diffmic-c1,diffmic-c2,diffmic
    python benchmarks/ablation_steps.py runs/iois-table --methods resnet,iois-offline,iois-ois,iois

A method that takes no sampler (its rows say ``-``, e.g. the IOIS variants) is compared as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.report import load_summary
from harness.results.stats import ALPHA, adjust_p
from harness.results.summary import Settings, compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--methods", required=True, help="the ablation's rows in order, comma-separated")
    parser.add_argument("--sampler", default="uniform")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--correction", choices=("holm", "bh"), default="holm")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = Settings(replicates=args.bootstrap, correction=args.correction)
    summary = load_summary(args.runs_dir, settings, only={"method": set(methods)})
    datasets = sorted({d for d, _, _ in summary.details})
    if not datasets:
        raise SystemExit(f"no finished trial of {', '.join(methods)} under {args.runs_dir}")
    print(f"| dataset | step | seeds | Δ Macro-F1 [95% CI] | p ({args.correction}) | p (seeds) | McNemar p per seed |")
    print("|---|---|---|---|---|---|---|")
    for dataset in datasets:
        steps = []
        for before, after in zip(methods, methods[1:]):
            a, b = (summary.details.get((dataset, m, args.sampler)) or summary.details.get((dataset, m, "-"))
                    for m in (after, before))
            steps.append((before, after, compare(a, b, settings) if a and b and a.trials and b.trials else None))
        adjusted = adjust_p([c.get("p") if c else None for _, _, c in steps], args.correction)
        for (before, after, c), p_adj in zip(steps, adjusted):
            if c is None or "diff" not in c:
                why = "missing" if c is None else "no paired seeds"
                print(f"| {dataset} | {before} → {after} | {why} | | | | |")
                continue
            star = " *" if p_adj < ALPHA else ""
            seed_p = "–" if c["seed_p"] is None else f"{c['seed_p']:.3g}"
            mcnemar = " / ".join(f"{t['p_value']:.3g}" for t in c["mcnemar"])
            print(f"| {dataset} | {before} → {after} | {len(c['paired_seeds'])} | {c['diff']:+.3f} "
                  f"[{c['low']:+.3f}, {c['high']:+.3f}] | {p_adj:.3g}{star} | {seed_p} | {mcnemar} |")


if __name__ == "__main__":
    main()
