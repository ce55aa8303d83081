"""Is the leaderboard's primary test calibrated? The full version of the simulation in tests/test_stats.py.

For each scenario of :mod:`harness.results.calibration` (where the variation between two methods of equal
quality comes from: the training seeds, the test images, or both), simulates COMPARISONS comparisons of two
methods with the same quality and counts how often each test rejects at alpha 0.05 (the false-positive rate,
which should be at most 0.05 plus Monte-Carlo error), then the same with a known gap (power). Prints a
Markdown table (the one in docs/reports.md):

    python benchmarks/calibrate_stats.py --comparisons 500 --replicates 400 --gap 0.4

About 3 minutes of CPU on one core at these settings (2 x 3 x 500 simulated comparisons, each with two
bootstraps of 400 image resamples).
"""

from __future__ import annotations

import argparse
import time

from harness.results.calibration import SCENARIOS, TESTS, calibrate

NAMES = {"two_level": "two-level (primary)", "two_level_resample": "two-level, seeds resampled",
         "images_only": "test images only (old primary)", "seed_ttest": "t-test over seeds"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=500)
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--gap", type=float, default=0.4, help="quality gap for the power rows (logit units)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.process_time()
    print(f"{args.comparisons} simulated comparisons per row, {args.replicates} image resamples, 3 seeds, "
          "alpha 0.05; rejection rate (Monte-Carlo standard error)\n")
    print("| scenario | truth | mean Δ Macro-F1 (sd) | " + " | ".join(NAMES[t] for t in TESTS) + " |")
    print("|---|---|---|" + "---|" * len(TESTS))
    for scenario in SCENARIOS:
        for gap in (0.0, args.gap):
            out = calibrate(scenario, comparisons=args.comparisons, gap=gap, replicates=args.replicates,
                            seed=args.seed)
            truth = "equal (false positives)" if gap == 0 else f"gap {gap:g} (power)"
            rates = " | ".join(f"{out['rates'][t]:.3f} ({out['mc_se'][t]:.3f})" for t in TESTS)
            print(f"| {scenario.name} | {truth} | {out['mean_diff']:+.3f} ({out['sd_diff']:.3f}) | {rates} |",
                  flush=True)
    print(f"\nCPU time: {time.process_time() - started:.0f} s")


if __name__ == "__main__":
    main()
