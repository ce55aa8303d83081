"""Issue 19's figures: prototype guidance against classifier-free guidance (IMPROVE), from runs folders.

Run the trials first (the lead's long measurement; about 35 min per dataset and seed on the quiet 2-core
machine, see benchmarks/README.md), then summarise them:

    harness run --methods resnet,protodiff,cfg-diff,protodiff-tstr,cfg-diff-tstr \
        --datasets retinamnist,pneumoniamnist --data-dir ../shared/data --seeds 0,1,2 --runs-dir runs/protodiff
    python benchmarks/bench_protodiff.py runs/protodiff --out leaderboards/protodiff/README.md
    python benchmarks/bench_protodiff.py runs/retinamnist runs/pneumoniamnist --out leaderboards/protodiff/README.md

For each dataset it writes, as Markdown:

1. **Train on synthetic, test on real** (IMPROVE's evaluation): macro precision, macro recall (B-ACC) and
   Macro-F1 of ``protodiff-tstr`` and ``cfg-diff-tstr`` with ``resnet`` on the real training split as the
   reference row (mean and 95% CI over seeds), the paired tests of prototype against CFG guidance, and
   whether the paper's claim (prototype guidance beats CFG on train-on-synthetic) holds: *holds* when the
   Macro-F1 difference is positive and significant (the two-level paired bootstrap over test images and seeds,
   the report's primary test, Holm-adjusted over the dataset's comparisons), *reversed* when it is negative and
   significant, *not shown* otherwise.
2. **Generation metrics** of both generators against the validation images (mean over seeds): Frechet
   distance, k-NN precision and recall, per class, pooled and the class mean.
3. **Augmentation**: ``protodiff`` and ``cfg-diff`` (ResNet-18 on real + synthetic images) against
   ``resnet`` alone, with the same paired tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.report import load_summary
from harness.results.stats import ALPHA, adjust_p, mean_ci
from harness.results.summary import Settings, compare

TSTR = ("protodiff-tstr", "cfg-diff-tstr")
AUGMENT = ("protodiff", "cfg-diff")
REFERENCE = "resnet"
GENERATORS = {"protodiff": ("protodiff", "protodiff-tstr"), "cfg-diff": ("cfg-diff", "cfg-diff-tstr")}


def _ci(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """Mean [95% t-interval over seeds], the interval clipped to the quantity's range (``bounds``): with 3
    seeds a t-interval of a proportion near 1 would otherwise run past 1."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    mean, low, high = mean_ci(values)
    low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"{mean:.3f}" if len(values) < 2 else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _per_seed_scores(detail) -> dict[str, list[float]]:
    from sklearn.metrics import f1_score, precision_score, recall_score

    out: dict[str, list[float]] = {"precision": [], "recall": [], "macro_f1": []}
    for t in detail.trials:
        labels = np.arange(t.num_classes)
        out["precision"].append(precision_score(t.labels, t.pred, labels=labels, average="macro", zero_division=0))
        out["recall"].append(recall_score(t.labels, t.pred, labels=labels, average="macro", zero_division=0))
        out["macro_f1"].append(f1_score(t.labels, t.pred, labels=labels, average="macro", zero_division=0))
    return out


def _test_row(name: str, against: str, c: dict, p_adjusted: float | None) -> str:
    if "diff" not in c:
        return f"| {name} vs {against} | no paired seeds | | | | |"
    star = " *" if p_adjusted is not None and p_adjusted < ALPHA else ""
    seed_p = "–" if c.get("seed_p") is None else f"{c['seed_p']:.3g}"
    mcnemar = " / ".join(f"{t['p_value']:.2g}" for t in c.get("mcnemar", []))
    return (f"| {name} vs {against} | {len(c['paired_seeds'])} | {c['diff']:+.3f} [{c['low']:+.3f}, "
            f"{c['high']:+.3f}] | {p_adjusted:.3g}{star} | {seed_p} | {mcnemar} |")


def claim(c: dict, p_adjusted: float | None) -> str:
    """Does prototype guidance beat CFG on train-on-synthetic Macro-F1 (the primary test, adjusted)?"""
    if "diff" not in c:
        return "cannot be judged (no paired seeds)"
    if p_adjusted is not None and p_adjusted < ALPHA:
        return "**holds**" if c["diff"] > 0 else "**reversed** (CFG is significantly better)"
    return f"**not shown** (difference {c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], adjusted p {p_adjusted:.3g})"


def _tests(pairs: list[tuple[str, str, object, object]], settings: Settings) -> list[tuple[str, str, dict, float]]:
    """The paired tests of each (name, against) pair, Holm-adjusted together."""
    found = [(a, b, compare(x, y, settings)) for a, b, x, y in pairs if x and y and x.trials and y.trials]
    adjusted = adjust_p([c.get("p") for _, _, c in found], "holm")
    return [(a, b, c, p) for (a, b, c), p in zip(found, adjusted)]


def _generation(summary, dataset: str) -> list[str]:
    lines = []
    for generator, methods in GENERATORS.items():
        seen: dict[str, dict] = {}  # one measurement per generator (key): the augment and TSTR trials share it
        classes: list[str] = []
        for method in methods:
            detail = summary.details.get((dataset, method, "uniform"))
            for t in (detail.trials if detail else []):
                notes = t.record.get("notes") or {}
                key = (notes.get("generator") or {}).get("key")
                if key and "generation" in notes:
                    seen.setdefault(key, notes["generation"])
                    classes = classes or [c for c in t.record.get("classes", []) if c in notes["generation"]["per_class"]]
        if not seen:
            continue
        reports = list(seen.values())
        classes = classes or list(reports[0]["per_class"])
        lines.append(f"\n**{generator}** ({len(reports)} generator(s), one per seed; against the validation images; "
                     f"encoder {reports[0]['encoder']['backbone']} ({reports[0]['encoder']['init']}, seed "
                     f"{reports[0]['encoder']['seed']}); k = {reports[0]['k']})\n")
        lines.append("| class | real / generated images | Frechet distance | precision | recall |")
        lines.append("|---|---|---|---|---|")
        rows = [(name, [r["per_class"][name] for r in reports]) for name in classes]
        rows += [("pooled", [r["overall"] for r in reports]), ("class mean", [r["class_mean"] for r in reports])]
        for name, values in rows:
            n = f"{values[0].get('n_real', '')} / {values[0].get('n_fake', '')}" if "n_real" in values[0] else ""
            cells = [_ci([v.get(key) for v in values], (0.0, float("inf")) if key == "fd" else (0.0, 1.0))
                     for key in ("fd", "precision", "recall")]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return lines


def report(runs_dirs: list[Path], bootstrap: int) -> str:
    """One section per dataset, from each runs folder in turn (a folder per experiment: the datasets of
    ``runs/retinamnist`` and ``runs/pneumoniamnist`` side by side)."""
    methods = {*TSTR, *AUGMENT, REFERENCE}
    settings = Settings(replicates=bootstrap)
    sections = []
    for runs_dir in runs_dirs:
        summary = load_summary(runs_dir, settings, only={"method": methods, "sampler": {"uniform"}})
        for dataset in sorted({d for d, _, _ in summary.details}):
            if any(dataset == d for _, d in sections):
                raise SystemExit(f"{dataset} is in more than one of {', '.join(map(str, runs_dirs))}: give each "
                                 f"dataset's trials in one folder (one section per dataset)")
            sections.append((summary, dataset))
    if not sections:
        raise SystemExit(f"no finished trial of {', '.join(sorted(methods))} under {', '.join(map(str, runs_dirs))}")
    folders = ", ".join(f"`{d}`" for d in runs_dirs)
    out = [f"# Prototype guidance vs classifier-free guidance (issue 19)\n\nFrom {folders}: the report's primary "
           f"test (two-level paired bootstrap over test images and seeds, {bootstrap} resamples), Holm-adjusted "
           f"over each table's comparisons (* = adjusted p < {ALPHA}); the t-test over seeds and McNemar per seed "
           f"are secondary.\n"]
    header = ("| comparison | paired seeds | Δ Macro-F1 [95% CI] | p (adjusted) | p (seeds) | McNemar p per seed |\n"
              "|---|---|---|---|---|---|")
    for summary, dataset in sections:
        get = lambda m, d=dataset, s=summary: s.details.get((d, m, "uniform"))  # noqa: E731
        out.append(f"## {dataset}\n\n### Train on synthetic, test on real\n")
        out.append("| training images | classifier | seeds | macro precision | macro recall (B-ACC) | Macro-F1 |")
        out.append("|---|---|---|---|---|---|")
        for method, what in (("protodiff-tstr", "synthetic, prototype guidance"),
                             ("cfg-diff-tstr", "synthetic, classifier-free guidance"),
                             (REFERENCE, "real (reference)")):
            detail = get(method)
            if detail is None or not detail.trials:
                out.append(f"| {what} | {method} | 0 | | | |")
                continue
            scores = _per_seed_scores(detail)
            out.append(f"| {what} | {method} | {len(detail.trials)} | {_ci(scores['precision'])} | "
                       f"{_ci(scores['recall'])} | {_ci(scores['macro_f1'])} |")
        out.append("\n" + header)
        tests = _tests([("protodiff-tstr", "cfg-diff-tstr", get("protodiff-tstr"), get("cfg-diff-tstr")),
                        *((m, REFERENCE, get(m), get(REFERENCE)) for m in TSTR)], settings)
        verdict = "cannot be judged (a method is missing)"
        for a, b, c, p in tests:
            out.append(_test_row(a, b, c, p))
            if (a, b) == ("protodiff-tstr", "cfg-diff-tstr"):
                verdict = claim(c, p)
        out.append(f"\nIMPROVE's claim, prototype guidance beats classifier-free guidance on train-on-synthetic: "
                   f"{verdict}.\n")
        out.append("### Generation metrics")
        out.extend(_generation(summary, dataset))
        out.append("\n### Synthetic images as augmentation (ResNet-18 on real + synthetic)\n")
        out.append(header)
        tests = _tests([(m, REFERENCE, get(m), get(REFERENCE)) for m in AUGMENT], settings)
        out.extend(_test_row(a, b, c, p) for a, b, c, p in tests)
        out.extend(f"| {m} vs {REFERENCE} | missing | | | | |" for m in AUGMENT if m not in {a for a, *_ in tests})
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dirs", type=Path, nargs="+", help="runs folders (one per experiment)")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    text = report(args.runs_dirs, args.bootstrap)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
