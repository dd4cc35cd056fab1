"""FROC: sensitivity at fixed false positives per scan, as LUNA16 scores nodule detection (unit 10).

mAP asks "how precise are the detections?"; a radiologist reading a CT with a CAD system asks
"how many nodules does it find if I accept ``f`` false alarms per scan?". The **free-response
ROC** (FROC) curve answers it for every ``f``: sweep a threshold down the candidates' scores and
plot the fraction of nodules found (sensitivity) against the number of false-positive candidates
per scan. LUNA16 (Setio et al. 2017, "Validation, comparison, and combination of algorithms for
automatic detection of pulmonary nodules in computed tomography images: the LUNA16 challenge")
reports it at **1/8, 1/4, 1/2, 1, 2, 4 and 8 FPs per scan** and ranks systems by the mean of those
seven sensitivities, the **competition performance metric (CPM)**.

The rules, those of the LUNA16 evaluation script:

* a candidate is a point (and a score) in a scan; it **hits** a nodule when it lies within the
  nodule's radius of its centre (:func:`candidate_hits`: a sphere of that radius, or an
  ellipsoid with one radius per axis);
* each nodule is **detected** by its highest-scoring hitting candidate — the other candidates
  on the same nodule are neither true nor false positives (ignored);
* a candidate that hits no nodule is a **false positive**;
* at threshold ``t``: sensitivity = nodules detected by a candidate scoring ``>= t`` / all
  nodules; FPs per scan = false positives scoring ``>= t`` / number of scans. Candidates with
  equal scores enter together (one point of the curve per distinct score), and the curve starts
  at ``(0, 0)``;
* the sensitivity at ``f`` FPs per scan is read off the curve by linear interpolation between
  its points (``np.interp`` in the LUNA16 script; at a vertical step the upper value), flat
  beyond the last point; ``interpolation="step"`` gives the conservative step reading instead
  (the best sensitivity whose FP rate is at most ``f``).

Edge cases: no candidates at all give sensitivity 0 everywhere; scans without nodules add false
positives only; with no nodule in any scan the sensitivity is undefined — NaN, and so the CPM.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["FP_RATES", "candidate_hits", "match_candidates", "froc_curve", "sensitivity_at",
           "froc", "competition_performance_metric"]

#: The false-positive rates (per scan) at which LUNA16 reports sensitivity.
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _points(value, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 2 or value.shape[1] != 3:
        raise ValueError(f"{name} must have shape [P, 3] (one point per row, e.g. z, y, x), got {list(value.shape)}")
    return value.double()


def candidate_hits(candidates: Tensor, centers: Tensor, radii: Tensor) -> Tensor:
    """Which candidate lies inside which nodule: ``Tensor[P, G]`` bool.

    Args:
        candidates: ``Tensor[P, 3]`` positions.
        centers: ``Tensor[G, 3]`` nodule centres, same axes and units.
        radii: ``Tensor[G]`` (a sphere, LUNA16's ``diameter_mm / 2``) or ``Tensor[G, 3]`` (one
            radius per axis: an ellipsoid, e.g. in voxels of an anisotropic scan), positive.

    A candidate on the surface counts as inside (LUNA16: distance ``<=`` radius).
    """
    candidates, centers = _points(candidates, "candidates"), _points(centers, "centers")
    if not isinstance(radii, Tensor):
        raise TypeError(f"radii must be a torch.Tensor, got {type(radii).__name__}")
    radii = radii.double()
    if radii.ndim == 1:
        radii = radii[:, None].expand(-1, 3)
    if radii.shape != centers.shape:
        raise ValueError(f"radii must have shape [{centers.shape[0]}] or [{centers.shape[0]}, 3], "
                         f"got {list(radii.shape)}")
    if radii.numel() and not bool((radii > 0).all()):
        raise ValueError("radii must be positive")
    scaled = (candidates[:, None, :] - centers[None, :, :]) / radii[None, :, :]
    return (scaled ** 2).sum(dim=-1) <= 1.0


def _scores(value, count: int, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 1 or value.shape[0] != count:
        raise ValueError(f"{where} must have shape [{count}] (one score per candidate), got {list(value.shape)}")
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where} must be finite")
    return value.double()


def match_candidates(candidates: Tensor, scores: Tensor, centers: Tensor, radii: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """One scan's candidates against its nodules.

    Returns:
        ``(nodule_scores [G], false_positive_scores [F])``: each nodule's best hitting score
        (``-inf`` when no candidate hits it), and the scores of the candidates that hit no
        nodule. Other hits on an already-detected nodule are ignored.
    """
    scores = _scores(scores, _points(candidates, "candidates").shape[0], "scores")
    hits = candidate_hits(candidates, centers, radii)                      # [P, G]
    hit_scores = torch.where(hits, scores[:, None], torch.tensor(-math.inf, dtype=torch.float64))
    nodule_scores = hit_scores.amax(dim=0) if hits.shape[0] else torch.full((hits.shape[1],), -math.inf,
                                                                             dtype=torch.float64)
    return nodule_scores, scores[~hits.any(dim=1)]


def froc_curve(nodule_scores: Tensor, false_positive_scores: Tensor, n_scans: int
               ) -> tuple[Tensor, Tensor, Tensor]:
    """The FROC curve of a set of scans.

    Args:
        nodule_scores: ``Tensor[L]`` every nodule's detection score, ``-inf`` if missed
            (:func:`match_candidates`, concatenated over scans); ``L`` counts all nodules.
        false_positive_scores: ``Tensor[F]`` scores of all false-positive candidates.
        n_scans: number of scans (the FP rate's denominator), ``>= 1``.

    Returns:
        ``(fps_per_scan, sensitivity, thresholds)``, each ``Tensor[T + 1]`` float64: the point
        ``(0, 0)`` at threshold ``+inf``, then one point per distinct score, by decreasing
        threshold. Sensitivity is NaN when ``L = 0``.
    """
    if isinstance(n_scans, bool) or not isinstance(n_scans, (int, np.integer)) or n_scans < 1:
        raise ValueError(f"n_scans must be an int >= 1, got {n_scans!r}")
    for name, value in (("nodule_scores", nodule_scores), ("false_positive_scores", false_positive_scores)):
        if not isinstance(value, Tensor) or value.ndim != 1:
            raise ValueError(f"{name} must be a 1-D torch.Tensor, got "
                             f"{list(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
    nodule_scores, fp_scores = nodule_scores.double(), false_positive_scores.double()
    if bool(torch.isnan(nodule_scores).any()) or not bool(torch.isfinite(fp_scores).all()):
        raise ValueError("scores must be finite (a missed nodule's score is -inf)")
    detected = nodule_scores[torch.isfinite(nodule_scores)]
    thresholds = torch.unique(torch.cat([detected, fp_scores]), sorted=True).flip(0)   # decreasing
    # How many scores are >= each threshold: all but those left of it in ascending order.
    found = len(detected) - torch.searchsorted(detected.sort().values, thresholds, side="left")
    false = len(fp_scores) - torch.searchsorted(fp_scores.sort().values, thresholds, side="left")
    zero = torch.zeros(1, dtype=torch.float64)
    n_nodules = len(nodule_scores)
    sensitivity = found.double() / n_nodules if n_nodules else torch.full_like(thresholds, math.nan)
    return (torch.cat([zero, false.double() / n_scans]),
            torch.cat([zero if n_nodules else zero + math.nan, sensitivity]),
            torch.cat([torch.tensor([math.inf], dtype=torch.float64), thresholds]))


def sensitivity_at(fps: Tensor, sensitivity: Tensor, fp_rates=FP_RATES, interpolation: str = "linear") -> Tensor:
    """The curve's sensitivity at each of ``fp_rates`` FPs per scan: ``Tensor[len(fp_rates)]``.

    ``interpolation="linear"`` (LUNA16): between the last point with FP rate ``<= f`` (the
    highest, at a vertical step) and the next one; ``"step"``: that last point's sensitivity.
    Beyond the curve's last point, its sensitivity.
    """
    if interpolation not in ("linear", "step"):
        raise ValueError(f"interpolation must be 'linear' or 'step', got {interpolation!r}")
    if not isinstance(fps, Tensor) or not isinstance(sensitivity, Tensor) or fps.ndim != 1 \
            or fps.shape != sensitivity.shape or len(fps) == 0:
        raise ValueError("fps and sensitivity must be 1-D tensors of the same, non-zero length (froc_curve's output)")
    if bool((fps.diff() < 0).any()):
        raise ValueError("fps must be non-decreasing (froc_curve's order)")
    rates = torch.as_tensor(fp_rates, dtype=torch.float64).reshape(-1)
    if bool((rates < 0).any()) or not bool(torch.isfinite(rates).all()):
        raise ValueError(f"fp_rates must be finite and >= 0, got {fp_rates}")
    fps, sensitivity = fps.double(), sensitivity.double()
    last = torch.searchsorted(fps, rates, side="right") - 1          # last point with fps <= f
    if bool((last < 0).any()):
        raise ValueError("the curve must start at fps = 0 (froc_curve's first point)")
    value = sensitivity[last]
    if interpolation == "linear":
        nxt = (last + 1).clamp(max=len(fps) - 1)
        span = fps[nxt] - fps[last]
        slope = torch.where(span > 0, (sensitivity[nxt] - sensitivity[last]) / span.clamp(min=1e-300),
                            torch.zeros_like(span))
        value = value + slope * (rates - fps[last])
    return value


def competition_performance_metric(sensitivities) -> float:
    """CPM: the mean of the sensitivities at the seven FP rates of :data:`FP_RATES`."""
    values = torch.as_tensor(sensitivities, dtype=torch.float64).reshape(-1)
    if len(values) != len(FP_RATES):
        raise ValueError(f"the CPM averages {len(FP_RATES)} sensitivities (at {FP_RATES} FPs per scan), "
                         f"got {len(values)}")
    return float(values.mean())


def froc(predictions, targets, fp_rates=FP_RATES, interpolation: str = "linear") -> dict:
    """FROC analysis of candidates in a set of scans (LUNA16's protocol).

    Args:
        predictions: one dict per scan, ``{"centers": Tensor[P, 3], "scores": Tensor[P]}``.
        targets: one dict per scan, ``{"centers": Tensor[G, 3], "radii": Tensor[G] or [G, 3]}``
            (``G = 0`` allowed), in the same units and axis order as the predictions.
        fp_rates: FPs per scan at which to read the sensitivity.
        interpolation: see :func:`sensitivity_at`.

    Returns:
        dict with ``fps``, ``sensitivity``, ``thresholds`` (the curve, :func:`froc_curve`),
        ``fp_rates``, ``sensitivity_at`` (``Tensor[len(fp_rates)]``), ``cpm`` (float; the mean
        over ``fp_rates``, LUNA16's CPM for the default rates), ``n_nodules``, ``n_detected``
        (found at any score), ``n_scans``.
    """
    if not isinstance(predictions, (list, tuple)) or not isinstance(targets, (list, tuple)):
        raise TypeError("predictions and targets must be lists of dicts (one per scan)")
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions but {len(targets)} targets: one of each per scan")
    if not predictions:
        raise ValueError("froc needs at least one scan")
    nodule_scores, fp_scores = [], []
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        for what, item, keys in (("predictions", pred, ("centers", "scores")), ("targets", target, ("centers", "radii"))):
            if not isinstance(item, Mapping) or any(k not in item for k in keys):
                raise ValueError(f"{what}[{i}] must be a dict with keys {keys}")
        found, false = match_candidates(pred["centers"], pred["scores"], target["centers"], target["radii"])
        nodule_scores.append(found)
        fp_scores.append(false)
    nodule_scores, fp_scores = torch.cat(nodule_scores), torch.cat(fp_scores)
    fps, sensitivity, thresholds = froc_curve(nodule_scores, fp_scores, len(predictions))
    at = sensitivity_at(fps, sensitivity, fp_rates, interpolation)
    return {"fps": fps, "sensitivity": sensitivity, "thresholds": thresholds,
            "fp_rates": tuple(float(f) for f in torch.as_tensor(fp_rates, dtype=torch.float64).reshape(-1)),
            "sensitivity_at": at, "cpm": float(at.mean()), "n_nodules": len(nodule_scores),
            "n_detected": int(torch.isfinite(nodule_scores).sum()), "n_scans": len(predictions)}
