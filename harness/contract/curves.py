"""Learning curves: was a trial still improving when its budget ran out?

A trial's ``curve.json`` is the list of per-epoch records its method reported (``epoch``, losses,
``val_<metric>``, ...). A trial is **still improving** when the best validation headline score of the last
fifth of its budget beats the best score before it by more than a margin (``IMPROVING_MARGIN`` by default:
0.01, a point of Macro-F1): its training had not levelled off, so its row says less about its method than
a converged one would. The budget is the span of the reported epochs (first to last) of the trial's last
stage: a multi-stage method (records with a ``stage``, e.g. DiffMIC's DCG warm-up then its joint training)
is judged on the stage that makes its predictions, whose scores an earlier stage's (the prior's) must not
mask. A curve without a validation score on both sides of the four-fifths mark cannot tell, and is not
flagged.

Part of the contract (pure Python): the leaderboard flags rows with it (`harness.results.summary`), and a method
that notes its own budget (`plugins/diffclf`'s `budget_limited`) calls the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

IMPROVING_MARGIN = 0.01


def points(curve: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(epoch, value)`` of every record with a finite number under ``key`` (records without ``epoch`` count
    from 1 in order)."""
    out = []
    for i, record in enumerate(curve):
        value, epoch = record.get(key), record.get("epoch", i + 1)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and isinstance(epoch, (int, float)):
            out.append((float(epoch), float(value)))
    return out


def last_stage(curve: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of the curve's last stage: the trailing run of records whose ``stage`` equals the last
    record's (no ``stage`` counts as one: a method's final classifier logged without a name after a named
    generator stage is its own stage), so a stage that comes back after another counts from its last start."""
    start = len(curve)
    while start and curve[start - 1].get("stage") == curve[-1].get("stage"):
        start -= 1
    return list(curve[start:])


def _span(curve: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """(four-fifths mark, last epoch) of the budget: the span of the reported epochs, first to last."""
    epochs = [float(r.get("epoch", i + 1)) for i, r in enumerate(curve) if isinstance(r.get("epoch", i + 1), (int, float))]
    return (min(epochs) + 0.8 * (max(epochs) - min(epochs)), max(epochs)) if epochs else None


def end_of_curve(curve: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the last fifth of the budget (the last point when none falls after the mark), or None
    without a point: where the curve ends (its last stage's). Unlike the best value, it does not rise with the
    number of validations, so budgets that validate more often compare fairly on a small validation split."""
    curve = last_stage(curve)
    pts, span = points(curve, key), _span(curve)
    if not pts or span is None:
        return None
    late = [v for e, v in pts if e > span[0]] or [pts[-1][1]]
    return sum(late) / len(late)


def still_improving(curve: Sequence[Mapping[str, Any]], key: str, margin: float = IMPROVING_MARGIN
                    ) -> dict[str, float] | None:
    """``{"rise", "before", "last", "from_epoch", "to_epoch", "improving"}`` for the validation score ``key``
    (e.g. ``val_macro_f1``) over the curve's last stage, or None when it cannot tell (see the module docstring)."""
    curve = last_stage(curve)
    pts, span = points(curve, key), _span(curve)
    if not pts or span is None:
        return None
    mark, last = span
    before = [v for e, v in pts if e <= mark]
    late = [v for e, v in pts if e > mark]
    if not before or not late:
        return None
    rise = max(late) - max(before)
    return {"rise": rise, "before": max(before), "last": max(late), "from_epoch": mark, "to_epoch": last,
            "improving": rise > margin}


def plateau(means: Mapping[int, float], tolerance: float) -> int | None:
    """The smallest budget whose mean score is within ``tolerance`` of the best budget's (NaN means left out), or
    None without any: where a budget study levels off."""
    finite = {b: v for b, v in means.items() if not math.isnan(v)}
    if not finite:
        return None
    best = max(finite.values())
    return min(b for b, v in finite.items() if v >= best - tolerance)
