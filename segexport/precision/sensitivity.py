"""Sensitivity pass: keep the fewest, most sensitive layers in FP32 until the budget holds.

Method (leave one out, then grow the kept set in order of sensitivity):

1. The variant with every candidate layer in low precision has an error proxy ``E_all`` on a
   small subset of the val images (``SENSITIVITY_IMAGES``): the mean squared logit difference
   from the FP32 model (the fraction of pixels whose argmax differs, for a model without a
   logits output).
2. For each layer ``L``, the variant with only ``L`` kept in FP32 gives ``E_L``; the layer's
   sensitivity is the error it removes, ``E_all - E_L``. Each layer is judged in the context of
   all the others being quantized (quantizing one layer alone would miss how errors compound),
   at the price of one build and one small-subset run per layer; logit error is used for
   ranking because it moves smoothly where the mIoU of a small subset moves in jumps.
3. The top 1, 2, ... layers with a positive sensitivity are kept in FP32, the full val mIoU
   measured each time, until the drop is within budget or ``max_fallback`` layers are kept.
   If none is within budget, the candidate with the smallest drop is reported (and fails).

The pass only sees callables (``proxy_of(kept)`` and ``miou_of(kept)`` build a variant with
the ``kept`` node names in FP32 and measure it), so it is the same for INT8 and FP16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from segexport.progress import progress_bar

SENSITIVITY_IMAGES = 16
METHOD = ("leave-one-out: per layer, the drop in mean squared logit error vs FP32 on "
          f"{SENSITIVITY_IMAGES} val images when only that layer is kept in FP32; the most sensitive "
          "layers are then kept in FP32 one by one until the val mIoU drop is within budget")


@dataclass(frozen=True)
class LayerScore:
    """One candidate layer: its node name, type, error proxy when kept in FP32, and sensitivity."""

    name: str
    op_type: str
    proxy: float
    sensitivity: float


@dataclass
class FallbackOutcome:
    """What the pass found.

    Attributes:
        kept: node names kept in FP32 by the chosen candidate (most sensitive first).
        passed: the chosen candidate is within budget.
        miou: its val mIoU; ``drop``: ``100 * (reference - miou)``, in points.
        ranking: every candidate layer, most sensitive first.
        tried: ``{"kept": k, "miou", "drop_points"}`` for every candidate measured.
    """

    kept: list[str]
    passed: bool
    miou: float
    drop: float
    ranking: list[LayerScore] = field(default_factory=list)
    tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        by_name = {s.name: s for s in self.ranking}
        return {
            "method": METHOD,
            "kept_fp32": [asdict(by_name[n]) for n in self.kept],
            "passed": self.passed, "miou": self.miou, "drop_points": self.drop,
            "ranking": [asdict(s) for s in self.ranking], "tried": self.tried,
        }


def default_max_fallback(layers: int) -> int:
    """A fifth of the quantized layers (at least 1 when there is any layer)."""
    return max(1, layers // 5) if layers else 0


def rank_layers(layers: Sequence[dict[str, str]], proxy_of: Callable[[Sequence[str]], float], baseline: float,
                *, progress: bool = True) -> list[LayerScore]:
    """Score each layer by the error proxy it removes when kept in FP32 (see the module docstring).

    Args:
        layers: ``{"name", "op_type"}`` per candidate, in graph order (ties keep this order).
        proxy_of: builds the variant keeping the given nodes in FP32 and returns its error proxy.
        baseline: the proxy of the variant with nothing kept in FP32.
    """
    scores = []
    with progress_bar(progress) as bar:
        task = bar.add_task("sensitivity", total=len(layers), info="")
        for layer in layers:
            proxy = proxy_of([layer["name"]])
            scores.append(LayerScore(layer["name"], layer["op_type"], proxy, baseline - proxy))
            bar.update(task, advance=1, info=layer["name"])
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].sensitivity, i))
    return [scores[i] for i in order]


def keep_until_budget(ranking: Sequence[LayerScore], miou_of: Callable[[Sequence[str]], float], *,
                      reference_miou: float, budget: float, max_fallback: int, progress: bool = True) -> FallbackOutcome:
    """Keep the top 1, 2, ... ``max_fallback`` layers in FP32 until the mIoU drop is within ``budget``.

    Only layers with a positive sensitivity are kept; keeping one that removes no error cannot help.
    """
    helpful = [s.name for s in ranking if s.sensitivity > 0][:max_fallback]
    tried: list[dict[str, Any]] = []
    with progress_bar(progress) as bar:
        task = bar.add_task("fallback", total=len(helpful), info="")
        for k in range(1, len(helpful) + 1):
            miou = miou_of(helpful[:k])
            drop = 100.0 * (reference_miou - miou)
            tried.append({"kept": k, "miou": miou, "drop_points": drop})
            bar.update(task, advance=1, info=f"{k} kept, drop {drop:.3f}")
            if drop <= budget:
                return FallbackOutcome(helpful[:k], True, miou, drop, list(ranking), tried)
    if not tried:
        return FallbackOutcome([], False, float("nan"), float("nan"), list(ranking), tried)
    best = min(tried, key=lambda t: (t["drop_points"], t["kept"]))
    return FallbackOutcome(helpful[: best["kept"]], False, best["miou"], best["drop_points"], list(ranking), tried)
