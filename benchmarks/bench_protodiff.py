"""Issue 19's figures: prototype guidance against classifier-free guidance (IMPROVE), from a runs folder.

Run the trials first (the lead's long measurement; about 35 min per dataset and seed on the quiet 2-core
machine, see benchmarks/README.md), then summarise them:

    harness run --methods resnet,protodiff,cfg-diff,protodiff-tstr,cfg-diff-tstr \
        --datasets retinamnist,pneumoniamnist --data-dir ../shared/data --seeds 0,1,2 --runs-dir runs/protodiff
    python benchmarks/bench_protodiff.py runs/protodiff --out leaderboards/protodiff/README.md

For each dataset it writes, as Markdown:

1. **Train on synthetic, test on real** (IMPROVE's evaluation): macro precision, macro recall (B-ACC) and
   Macro-F1 of ``protodiff-tstr`` and ``cfg-diff-tstr`` with ``resnet`` on the real training split as the
   reference row (mean and 95% CI over seeds), the paired tests of prototype against CFG guidance, and
   whether the paper's claim (prototype guidance beats CFG on train-on-synthetic) holds: *holds* when the
   Macro-F1 difference is positive and significant (paired bootstrap over test images and seeds, the
   report's primary test), *reversed* when it is negative and significant, *not shown* otherwise.
2. **Generation metrics** of both generators against the validation images (mean over seeds): Frechet
   distance, k-NN precision and recall, per class, pooled and the class mean.
3. **Augmentation**: ``protodiff`` and ``cfg-diff`` (ResNet-18 on real + synthetic images) against
   ``resnet`` alone, with the same paired tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.results.stats import ALPHA, compare, mean_ci, summarise

TSTR = ("protodiff-tstr", "cfg-diff-tstr")
AUGMENT = ("protodiff", "cfg-diff")
REFERENCE = "resnet"
GENERATORS = {"protodiff": ("protodiff", "protodiff-tstr"), "cfg-diff": ("cfg-diff", "cfg-diff-tstr")}


def _ci(values: list[float]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    mean, low, high = mean_ci(values)
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


def _test_row(name: str, against: str, c: dict) -> str:
    if "f1_diff" not in c:
        return f"| {name} vs {against} | no paired seeds | | | | |"
    star = lambda p: " *" if p is not None and p < ALPHA else ""  # noqa: E731
    seed_p = "–" if c["f1_seed_p"] is None else f"{c['f1_seed_p']:.3g}{star(c['f1_seed_p'])}"
    return (f"| {name} vs {against} | {len(c['paired_seeds'])} | {c['f1_diff']:+.3f} [{c['f1_diff_low']:+.3f}, "
            f"{c['f1_diff_high']:+.3f}] | {c['f1_p']:.3g}{star(c['f1_p'])} | {seed_p} | "
            f"{c['acc_diff']:+.3f} (McNemar p {c['mcnemar_p']:.3g}{star(c['mcnemar_p'])}) |")


def claim(c: dict) -> str:
    """Does prototype guidance beat CFG on train-on-synthetic Macro-F1 (the paired bootstrap)?"""
    if "f1_diff" not in c:
        return "cannot be judged (no paired seeds)"
    if c["f1_significant"]:
        return "**holds**" if c["f1_diff"] > 0 else "**reversed** (CFG is significantly better)"
    return f"**not shown** (difference {c['f1_diff']:+.3f}, p = {c['f1_p']:.3g})"


def _generation(summary, dataset: str) -> list[str]:
    lines = []
    for generator, methods in GENERATORS.items():
        seen: dict[str, dict] = {}  # one measurement per generator (key): the augment and TSTR trials share it
        classes: list[str] = []
        for method in methods:
            detail = summary.details.get((dataset, method, "uniform"))
            for t in (detail.trials if detail else []):
                notes = t.result.get("notes") or {}
                key = (notes.get("generator") or {}).get("key")
                if key and "generation" in notes:
                    seen.setdefault(key, notes["generation"])
                    classes = classes or [c for c in t.result.get("classes", []) if c in notes["generation"]["per_class"]]
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
            cells = [_ci([v.get(key) for v in values]) for key in ("fd", "precision", "recall")]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return lines


def report(runs_dir: Path, bootstrap: int) -> str:
    methods = {*TSTR, *AUGMENT, REFERENCE}
    summary = summarise(runs_dir, replicates=bootstrap, only={"method": methods, "sampler": {"uniform"}})
    datasets = sorted({d for d, _, _ in summary.details})
    if not datasets:
        raise SystemExit(f"no finished trial of {', '.join(sorted(methods))} under {runs_dir}")
    out = [f"# Prototype guidance vs classifier-free guidance (issue 19)\n\nFrom `{runs_dir}`; paired tests at "
           f"alpha = {ALPHA} (* = significant), bootstrap with {bootstrap} resamples.\n"]
    for dataset in datasets:
        get = lambda m, d=dataset: summary.details.get((d, m, "uniform"))  # noqa: E731
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
            s = _per_seed_scores(detail)
            out.append(f"| {what} | {method} | {len(detail.trials)} | {_ci(s['precision'])} | {_ci(s['recall'])} | "
                       f"{_ci(s['macro_f1'])} |")
        out.append("\n| comparison | paired seeds | Δ Macro-F1 [95% CI] | p (bootstrap) | p (seeds) | Δ accuracy |")
        out.append("|---|---|---|---|---|---|")
        verdict = "cannot be judged (a method is missing)"
        proto, cfg, ref = get("protodiff-tstr"), get("cfg-diff-tstr"), get(REFERENCE)
        if proto and cfg and proto.trials and cfg.trials:
            c = compare(proto, cfg, replicates=bootstrap)
            out.append(_test_row("protodiff-tstr", "cfg-diff-tstr", c))
            verdict = claim(c)
        for method in TSTR:
            if get(method) and ref and get(method).trials and ref.trials:
                out.append(_test_row(method, REFERENCE, compare(get(method), ref, replicates=bootstrap)))
        out.append(f"\nIMPROVE's claim, prototype guidance beats classifier-free guidance on train-on-synthetic: "
                   f"{verdict}.\n")
        out.append("### Generation metrics")
        out.extend(_generation(summary, dataset))
        out.append("\n### Synthetic images as augmentation (ResNet-18 on real + synthetic)\n")
        out.append("| comparison | paired seeds | Δ Macro-F1 [95% CI] | p (bootstrap) | p (seeds) | Δ accuracy |")
        out.append("|---|---|---|---|---|---|")
        for method in AUGMENT:
            if get(method) and ref and get(method).trials and ref.trials:
                out.append(_test_row(method, REFERENCE, compare(get(method), ref, replicates=bootstrap)))
            else:
                out.append(f"| {method} vs {REFERENCE} | missing | | | | |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    text = report(args.runs_dir, args.bootstrap)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
