"""Explanations of ``diffclf``: the referral curve (uncertainty) and counterfactual maps (brief Sec. 3.8-3.9).

- ``referral.csv`` / ``referral.png``: accuracy of the predictions kept when the fraction f of the most
  uncertain ones (ranked by u = 1 - winner's vote share, then vote entropy) is referred to a human.
- ``cf_<class>_<i>.png``: for a few test images per class, [image | factual reconstruction | counterfactual |
  |gray(x_cf) - gray(x)|]. Both reconstructions noise the image to t = ``cf_t`` with the same noise and run
  ``cf_steps`` ancestral steps with classifier-free guidance w = ``cf_guidance`` (eps~ = (1+w) eps_c - w eps_null),
  the factual one towards the true class, the counterfactual one towards the most likely other class
  (for two classes: the other class; otherwise the second most likely when the prediction is right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from harness.contract.specs import normalise
from harness.toolkit.nn.diffusion import ancestral_step, cfg_eps, eps_to_x0, to_eps
from harness.toolkit.nn.schedules import alpha_sigma_from_logsnr
from harness.toolkit.training import to_uint8_tensor
from plugins.diffclf.model import DiffusionClassifier, tensor_key

FRACTIONS = tuple(round(f, 2) for f in np.arange(0.0, 0.95, 0.05))


def referral_curve(labels, probs, uncertainty, entropy, fractions=FRACTIONS) -> list[dict]:
    """Accuracy on the (1 - f) most certain predictions for each referred fraction f."""
    labels, pred = np.asarray(labels), np.asarray(probs).argmax(1)
    order = np.lexsort((np.asarray(entropy), np.asarray(uncertainty)))  # most certain first
    rows = []
    for f in fractions:
        kept = order[: max(1, int(round(len(labels) * (1 - f))))]
        rows.append({"fraction_referred": float(f), "n_kept": int(len(kept)),
                     "accuracy": float((pred[kept] == labels[kept]).mean())})
    return rows


def plot_curve(rows: list[dict], path: Path, size=(360, 260)) -> None:
    """A small line plot of accuracy against the referred fraction (PIL only)."""
    w, h, m = size[0], size[1], 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    accs = [r["accuracy"] for r in rows]
    lo, hi = min(accs + [1.0]) - 0.02, 1.0
    lo = min(lo, max(0.0, min(accs) - 0.05))

    def xy(f, a):
        return m + f / 0.9 * (w - 2 * m), h - m - (a - lo) / max(hi - lo, 1e-6) * (h - 2 * m)

    draw.rectangle([m, m, w - m, h - m], outline="black")
    draw.line([xy(r["fraction_referred"], r["accuracy"]) for r in rows], fill=(200, 30, 30), width=2)
    draw.text((m, h - m + 6), "0", fill="black")
    draw.text((w - m - 10, h - m + 6), "0.9", fill="black")
    draw.text((w // 2 - 70, h - 18), "fraction referred (most uncertain)", fill="black")
    draw.text((4, m - 14), f"accuracy ({lo:.2f}-{hi:.2f})", fill="black")
    img.save(path)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (B, C, H, W) -> gray in [0, 1] (B, H, W) (ITU-R 601 luma for RGB)."""
    x = (x.clamp(-1, 1) + 1) / 2
    if x.shape[1] == 3:
        return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return x.mean(1)


@torch.no_grad()
def guided_reconstruction(clf, x: torch.Tensor, target: torch.Tensor, t_start: float, steps: int, w: float,
                          generator: torch.Generator, groups: int = 1) -> torch.Tensor:
    """Noise x to t_start, then ``steps`` ancestral steps to t = 0 with CFG towards ``target`` (B,).

    With ``groups`` = g the batch is g equal groups that share every noise draw (paired comparisons).
    """
    x0 = clf.transform(x)  # x is already at the model's resolution: transform only applies the wavelet

    def randn():
        shape = (x0.shape[0] // groups, *x0.shape[1:])
        return torch.randn(shape, generator=generator).repeat(groups, *([1] * (x0.dim() - 1))).to(x0.device)

    ts = torch.linspace(t_start, 0.0, steps + 1)
    lam = clf.schedule.logsnr(ts)
    alpha, sigma = alpha_sigma_from_logsnr(lam)
    z = alpha[0] * x0 + sigma[0] * randn()
    null = torch.full_like(target, clf.num_classes)
    for i in range(steps):
        rows = torch.cat([z, z])
        pred = clf.net(rows, lam[i].expand(len(rows)).to(x0.device), torch.cat([target, null]))
        eps_c, eps_u = to_eps(clf.prediction, rows, pred, alpha[i], sigma[i]).chunk(2)
        eps = cfg_eps(eps_c, eps_u, w)
        x0_hat = clf.transform(clf.inverse(eps_to_x0(z, eps, alpha[i], sigma[i])).clamp(-1, 1))  # clip in image space
        if i == steps - 1:
            z = x0_hat
        else:
            z = ancestral_step(z, x0_hat, alpha[i], sigma[i], alpha[i + 1], sigma[i + 1], randn())
    return clf.inverse(z)


def _panel(images: list[np.ndarray], scale: int) -> Image.Image:
    tiles = [Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale), Image.NEAREST) for im in images]
    out = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        out.paste(tile.convert("RGB"), (x, 0))
        x += tile.width + 4
    return out


def _to_u8(x: torch.Tensor) -> np.ndarray:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[2] == 1 else arr


def make_explainer(clf: DiffusionClassifier, config, *, mean, std, batch_size: int = 64, device: str = "cpu"):
    """``explain(images_uint8, labels, out_dir) -> [paths]`` for the runner (test images and labels)."""

    def to_tensor(images: np.ndarray) -> torch.Tensor:
        return normalise(to_uint8_tensor(images).to(device), mean, std)

    def outputs_for(images: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(images), batch_size):
            x = to_tensor(images[s:s + batch_size])
            out = clf.memo.get(tensor_key(x))  # the runner has just predicted these batches
            if out is None:
                with torch.inference_mode():
                    out = clf(x)
            for key, v in out.items():
                parts.setdefault(key, []).append(v.detach().float().cpu().numpy())
        return {key: np.concatenate(v) for key, v in parts.items()}

    def explain(images: np.ndarray, labels: np.ndarray, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        clf.eval()
        out = outputs_for(images)
        rows = referral_curve(labels, out["probs"], out["uncertainty"], out["vote_entropy"])
        csv = out_dir / "referral.csv"
        csv.write_text("fraction_referred,n_kept,accuracy\n" + "".join(
            f"{r['fraction_referred']:.2f},{r['n_kept']},{r['accuracy']:.4f}\n" for r in rows))
        plot_curve(rows, out_dir / "referral.png")
        paths = [csv, out_dir / "referral.png"]

        pick = np.concatenate([np.flatnonzero(labels == c)[: config.explain_per_class]
                               for c in range(clf.num_classes)]).astype(np.int64)
        if len(pick) == 0 or config.cf_steps < 1:
            return paths
        x = clf.model_view(to_tensor(images[pick]))
        true = torch.as_tensor(labels[pick], device=x.device).long()
        others = torch.as_tensor(out["probs"][pick]).clone()
        others[torch.arange(len(pick)), true.cpu()] = -1.0
        target = others.argmax(1).to(x.device)
        generator = torch.Generator().manual_seed(1234)
        # factual and counterfactual share the noise: run them as one batch with the noise repeated
        both = guided_reconstruction(clf, torch.cat([x, x]), torch.cat([true, target]), config.cf_t,
                                     config.cf_steps, config.cf_guidance, generator, groups=2)
        factual, counter = both.chunk(2)
        cmap = (_gray(counter) - _gray(x)).abs()
        scale = max(1, 112 // x.shape[-1])
        for i, idx in enumerate(pick):
            m = (cmap[i] / cmap[i].max().clamp(min=1e-6) * 255).round().byte().cpu().numpy()
            panel = _panel([_to_u8(x[i]), _to_u8(factual[i]), _to_u8(counter[i]), m], scale)
            path = out_dir / f"cf_true{int(true[i])}_to{int(target[i])}_test{int(idx)}.png"
            panel.save(path)
            paths.append(path)
        return paths

    return explain
