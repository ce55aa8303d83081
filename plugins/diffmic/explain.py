"""DiffMIC's explanation images: the DCG's saliency map and the ROIs its local branch looked at.

For ``per_class`` test images of each class, one PNG: the image with the chosen ROI boxes (numbered by
attention rank, the top one in yellow), the predicted class's saliency map, and the summed min-max-normalised
map the ROIs were picked from (paper Sec. 2.1, Fig. 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.toolkit.training import normalise, to_uint8_tensor
from plugins.diffmic.model import DiffMICClassifier


def _colormap(v: np.ndarray) -> np.ndarray:
    """Jet-like colours for values in [0, 1]: (..., 3) uint8."""
    rgb = np.stack([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)], -1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def make_explainer(module: DiffMICClassifier, mean, std, device: str, per_class: int, classes=()):
    """``explain(images_uint8, labels, out_dir)``: for ``per_class`` images of each class, a PNG with
    the image and the chosen ROI boxes (numbered by attention rank), the predicted class's saliency map,
    and the summed min-max-normalised map the ROIs were picked from."""

    def explain(images: np.ndarray, labels: np.ndarray, out_dir) -> list[Path]:
        from PIL import Image, ImageDraw

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        picks = [i for c in np.unique(labels) for i in np.flatnonzero(labels == c)[:per_class]]
        if not picks:
            return []
        x = normalise(to_uint8_tensor(images[picks]).to(device), mean, std).to(module.dtype)
        module.eval()
        with torch.inference_mode():
            out = module.dcg(x)
            pred = module(x)["probs"].argmax(1)
        size = images.shape[1]
        scale = max(1, 224 // size)
        paths = []
        for row, index in enumerate(picks):
            img = images[index]
            img = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :3]
            base = np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8))
            sal = out["saliency"][row : row + 1].float()  # (bfloat16 predictors: back to float32)
            sal_pred = F.interpolate(sal[:, int(pred[row]) : int(pred[row]) + 1], size=(size, size), mode="bilinear",
                                     align_corners=False)[0, 0]
            flat = sal[0].flatten(1)
            lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
            summed = ((flat - lo) / (hi - lo).clamp_min(1e-12)).sum(0).view(1, 1, *sal.shape[-2:])
            summed = F.interpolate(summed, size=(size, size), mode="nearest")[0, 0]
            panels = []
            for m in (None, sal_pred, summed):
                if m is None:
                    panels.append(base)
                    continue
                m = m.cpu().numpy()
                m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
                heat = np.kron(_colormap(m), np.ones((scale, scale, 1), dtype=np.uint8))
                panels.append((0.5 * base + 0.5 * heat).astype(np.uint8))
            canvas = Image.fromarray(np.concatenate(panels, 1))
            draw = ImageDraw.Draw(canvas)
            if "corners" in out:
                order = torch.argsort(out["attention"][row], descending=True).tolist()
                crop = module.dcg.crop_size * scale
                for rank, k in enumerate(order):
                    top, left = (int(v) * scale for v in out["corners"][row, k])
                    for p in range(3):
                        x0 = left + p * size * scale
                        draw.rectangle([x0, top, x0 + crop - 1, top + crop - 1],
                                       outline=(255, 255, 0) if rank == 0 else (255, 0, 255), width=2)
                        draw.text((x0 + 2, top + 1), str(rank + 1), fill=(255, 255, 255))
            name = lambda c: classes[c] if c < len(classes) else str(c)  # noqa: E731
            draw.text((3, 3), f"true {name(int(labels[index]))} / pred {name(int(pred[row]))}", fill=(255, 255, 255))
            path = out_dir / f"diffmic_saliency_class{int(labels[index])}_test{int(index)}.png"
            canvas.save(path)
            paths.append(path)
        return paths

    return explain
