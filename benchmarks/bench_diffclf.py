"""Diffusion-classifier figures (issues 7, 17).

    python benchmarks/bench_diffclf.py cost                     # batched vs naive loop, and pruning
    python benchmarks/bench_diffclf.py rules --dataset retinamnist --seed 0   # one model, several rules / N
    python benchmarks/bench_diffclf.py onnx --threads 1         # the classification loop: torch vs ONNX Runtime

``cost``: ms per image of one classification (the cpu-profile UNet, K classes x N trials) done as batched
network calls vs the naive loop of one network call per (image, class, trial); and network evaluations
and ms per image with Li et al.'s staged pruning.

``rules``: trains ONE diffclf model (cpu profile) on the dataset, then classifies the test split once with
the largest N; the results for smaller N are the first N trials of the same draws. Reports Macro-F1,
B-ACC, MCC per rule and N, pruned variants, network evaluations and ms per image (timed on 32 test
images per setting), and the accuracy of the 80% most certain predictions against all.

``onnx``: the cpu-profile classifier (untrained UNet: the cost does not depend on the weights) with its
UNet in torch and exported to ONNX Runtime (``plugins/diffclf/export.py``), same noise: ms per image at
batch 1 and batch 64 for each, and how far the two error matrices and predictions are apart.
Budget study (Macro-F1 against training steps): ``benchmarks/diffclf_budget.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.toolkit.nn.schedules import ShiftedCosineLogSNR
from plugins.diffclf import PROFILES, DiffClfConfig
from plugins.diffclf.model import build_unet, make_classifier, mean_rule_scores, rule_scores, vote_shares


def _timed(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cost(images: int, classes: int, votes: int, size: int) -> None:
    config = DiffClfConfig(**PROFILES["cpu"])
    torch.manual_seed(0)
    net = build_unet(config, 3, size, classes).eval()
    x = torch.randn(images, 3, size, size).clamp(-1, 1)
    clf = make_classifier(net, config, classes, votes, seed=0)
    schedule = ShiftedCosineLogSNR(base_d=config.base_d, image_d=config.image_d)

    def naive():
        with torch.inference_mode():
            for i in range(images):
                x0 = clf.transform(x[i:i + 1])
                for _ in range(votes):
                    t, noise = torch.rand(1), torch.randn_like(x0)
                    lam = schedule.logsnr(t)
                    for c in range(classes):
                        clf.class_errors(x0, t.view(1, 1), noise[:, None], torch.tensor([[c]]))
        return lam

    def batched():
        with torch.inference_mode():
            return clf(x)

    t_naive, t_batch = _timed(naive, 1), _timed(batched, 3)
    print(f"threads {torch.get_num_threads()}, {images} images x {classes} classes x {votes} trials, "
          f"{size} px (model input {tuple(clf.transform(x[:1]).shape[1:])})")
    print("| setting | network evaluations / image | ms / image |")
    print("|---|---|---|")
    print(f"| naive loop (1 row per call) | {classes * votes} | {t_naive * 1000 / images:.1f} |")
    print(f"| batched (all images, classes, trials) | {classes * votes} | {t_batch * 1000 / images:.1f} |")
    print(f"\nspeed-up of batching: {t_naive / t_batch:.1f}x")
    for stages, keep in (((votes // 5,), (2,)), ((votes // 5,), (3,)), ((votes // 5, votes // 2), (3, 1))):
        pruned = make_classifier(net, config, classes, votes, seed=0, prune_stages=stages, prune_keep=keep)
        evals = sum(n * k for n, k in pruned.plan)
        t = _timed(lambda p=pruned: p(x), 3)
        print(f"| batched, pruning stages {stages} keep {keep} | {evals} | {t * 1000 / images:.1f} |")


def rules(dataset: str, seed: int, votes_list: tuple[int, ...], data_dir: str | None, overrides: dict) -> None:
    from harness.contract.specs import DatasetRequest, TrialContext
    from harness.run.runner import cached_plugins, compute_metrics, scorer
    from plugins.diffclf.train import fit

    _, registry = cached_plugins((), ())
    spec = registry.get("datasets", dataset)
    options = spec.options(**spec.profiles.get("cpu", {}))
    cache = Path(tempfile.gettempdir()) / "harness-bench-cache"
    data = spec.load_fn()(DatasetRequest(options=options, seed=seed, data_dir=Path(data_dir) if data_dir else None,
                                         cache_dir=cache))
    config = dataclasses.replace(DiffClfConfig(**PROFILES["cpu"]), **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = TrialContext(seed=seed, device="cpu", threads=torch.get_num_threads(), trial_dir=Path(tmp),
                           reporter=lambda **m: print("   ", m, flush=True),
                           sampler_factory=registry.get("samplers", "uniform").build_fn(), profile="cpu",
                           scorer=scorer(registry))
        t0 = time.perf_counter()
        predictor = fit(data, config, ctx)
        fit_s = time.perf_counter() - t0
    net, k, n_max = predictor.module.net, data.num_classes, max(votes_list)
    labels = data.test.labels.astype(np.int64)
    print(f"{dataset}: train {len(data.train)}, test {len(labels)}, {k} classes, {data.size} px; fit {fit_s:.0f} s; "
          f"threads {torch.get_num_threads()}; config overrides {overrides}")
    clf = make_classifier(net, config, k, n_max, seed=seed + 1)
    t0 = time.perf_counter()
    errors = []
    with torch.inference_mode():
        for s in range(0, len(labels), 64):
            errors.append(clf.errors(predictor.to_tensor(data.test.images[s:s + 64]))[0])
    errors = torch.cat(errors)
    print(f"error matrix {tuple(errors.shape)} in {time.perf_counter() - t0:.0f} s\n")
    sample = predictor.to_tensor(data.test.images[:32])
    print("| rule | N | pruning | Macro-F1 | B-ACC | MCC | evals / image | ms / image | acc. 80% most certain | acc. all |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    settings = [(rule, n, (), ()) for n in votes_list for rule in ("mean", "vote")]
    settings += [("vote", n_max, (10,), (2,)), ("mean", n_max, (10,), (2,))]
    for rule, n, stages, keep in settings:
        if stages:
            pruned = make_classifier(net, config, k, n, seed=seed + 1, rule=rule, prune_stages=stages, prune_keep=keep)
            outs = [pruned(predictor.to_tensor(data.test.images[s:s + 64])) for s in range(0, len(labels), 64)]
            probs = torch.cat([o["probs"] for o in outs]).numpy()
            unc = torch.cat([o["uncertainty"] for o in outs]).numpy()
            timing_clf = pruned
        else:
            sub = errors[:, :n]
            shares = vote_shares(sub)
            scores = rule_scores(sub, "vote") if rule == "vote" else torch.softmax(-mean_rule_scores(sub), 1)
            probs, unc = scores.numpy(), (1 - shares.max(1).values).numpy()
            timing_clf = make_classifier(net, config, k, n, seed=seed + 1, rule=rule)
        with torch.inference_mode():
            ms = _timed(lambda c=timing_clf: c(sample), 1) * 1000 / len(sample)
        metrics, _ = compute_metrics(registry, labels, probs / probs.sum(1, keepdims=True))
        keep80 = np.lexsort((-probs.max(1), unc))[: int(round(0.8 * len(labels)))]
        acc80 = float((probs[keep80].argmax(1) == labels[keep80]).mean())
        evals = sum(a * b for a, b in timing_clf.plan)
        print(f"| {rule} | {n} | {f'{stages} keep {keep}' if stages else '-'} | {metrics['macro_f1']:.3f} | "
              f"{metrics['balanced_accuracy']:.3f} | {metrics['mcc']:.3f} | {evals} | {ms:.1f} | {acc80:.3f} | "
              f"{metrics['accuracy']:.3f} |", flush=True)


def onnx(classes: int, votes: int, size: int, batch: int) -> None:
    import tempfile

    from plugins.diffclf.export import onnx_classifier

    config = DiffClfConfig(**PROFILES["cpu"])
    torch.manual_seed(0)
    net = build_unet(config, 3, size, classes).eval()
    for p in net.parameters():  # away from the zero initialisation, so the outputs (and the votes) are not all equal
        torch.nn.init.normal_(p, std=0.05)
    clf = make_classifier(net, config, classes, votes, seed=0).eval()
    x = torch.rand(batch, 3, size, size) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        ort_clf = onnx_classifier(clf, Path(tmp) / "unet.onnx", x, threads=torch.get_num_threads())
        with torch.inference_mode():
            e_torch, e_onnx = clf.errors(x)[0], ort_clf.errors(x)[0]
            p_torch, p_onnx = clf(x)["probs"], ort_clf(x)["probs"]
            rows = []
            for name, c in (("torch", clf), ("onnxruntime", ort_clf)):
                b1 = _timed(lambda c=c: c(x[:1]), 3) * 1000
                bb = _timed(lambda c=c: c(x), 2) * 1000 / batch
                rows.append((name, b1, bb))
    print(f"threads {torch.get_num_threads()}, {classes} classes x {votes} trials, {size} px "
          f"(model input {tuple(clf.transform(x[:1]).shape[1:])}), batch {batch}, provider {ort_clf.net.provider}")
    print(f"| runtime | ms / image, batch 1 | ms / image, batch {batch} |")
    print("|---|---|---|")
    for name, b1, bb in rows:
        print(f"| {name} | {b1:.1f} | {bb:.1f} |")
    rel = ((e_onnx - e_torch).abs() / e_torch.abs().clamp(min=1e-12)).max().item()
    print(f"\nmax relative difference of the error matrices: {rel:.2e}; identical labels: "
          f"{bool(torch.equal(p_onnx.argmax(1), p_torch.argmax(1)))}; max |probs difference|: "
          f"{(p_onnx - p_torch).abs().max().item():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cost", "rules", "onnx"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--votes", type=int, default=51)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--dataset", default="retinamnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rule-votes", default="11,51,101")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (a TOML value)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="onnx: the throughput batch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "cost":
        cost(args.images, args.classes, args.votes, args.size)
    elif args.what == "onnx":
        onnx(args.classes, args.votes, args.size, args.batch)
    else:
        from harness.run.config import parse_value

        overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
        rules(args.dataset, args.seed, tuple(int(v) for v in args.rule_votes.split(",")), args.data_dir, overrides)


if __name__ == "__main__":
    main()
