"""PhotoTour evaluation of a patch descriptor (an extractor on a Brown split).

- :func:`evaluate_pairs`: FPR95, PR-AUC, ROC-AUC and CMC@1 on a
  :class:`~descriptors.data.phototour.PhotoTourData` pairs list (the m50 file, balanced 1:1).
- :func:`evaluate_phototour`: :func:`evaluate_pairs` and the fracking protocol
  (:func:`descriptors.fracking_protocol.evaluate_fracking`) from one description pass.

Metric definitions: :mod:`descriptors.metrics`; patches are described (64 -> 32, cv2
INTER_AREA as HardNet) by :func:`descriptors.patches.describe_patches`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from descriptors.fracking_protocol import (
    FRACKING_FOLDS,
    FRACKING_NEGATIVES,
    FRACKING_POINTS,
    FrackingFold,
    fold_rows,
    fracking_scores,
    sample_fracking_folds,
)
from descriptors.metrics import CMC_NEGATIVES, cmc_1_vs_n, fpr95, pr_auc, roc_auc
from descriptors.patches import describe_rows

logger = logging.getLogger(__name__)


def _score_pairs(
    data: Any, uniq: np.ndarray, desc: np.ndarray, n_neg: int, seed: int, return_arrays: bool
) -> dict:
    """The :func:`evaluate_pairs` numbers from descriptors ``desc`` of patches ``uniq``."""
    m = np.asarray(data.matches, np.int64).reshape(-1, 3)
    inv = np.searchsorted(uniq, m[:, :2])
    a, b = desc[inv[:, 0]], desc[inv[:, 1]]
    dist = np.sqrt(((a - b) ** 2).sum(1))
    labels = m[:, 2].astype(np.int64)
    out = {
        "fpr95": fpr95(dist, labels),
        "pr_auc": pr_auc(dist, labels),
        "roc_auc": roc_auc(dist, labels),
        "n_pairs": int(len(m)),
        "n_pos": int(labels.sum()),
    }
    pos = np.flatnonzero(labels == 1)
    curve = None
    try:
        curve = cmc_1_vs_n(
            a[pos], b[pos], np.asarray(data.point_ids)[m[pos, 0]], n_neg=n_neg, rng=seed
        )
        out["cmc1"] = float(curve[0])
        out["cmc_negatives"] = int(len(curve) - 1)
    except ValueError as e:
        logger.warning("CMC skipped: %s", e)
        out["cmc1"] = float("nan")
        out["cmc_negatives"] = 0
    if return_arrays:
        out["distances"] = dist
        out["labels"] = labels
        out["cmc"] = curve
    return out


def _m50_rows(data: Any) -> np.ndarray:
    m = np.asarray(data.matches, np.int64).reshape(-1, 3)
    if len(m) == 0:
        raise ValueError(f"{getattr(data, 'root', 'data')}: no pairs (m50 file) to evaluate")
    return m[:, :2]


def evaluate_pairs(
    extractor: Any,
    data: Any,
    batch: int = 1024,
    n_neg: int = CMC_NEGATIVES,
    seed: int = 0,
    return_arrays: bool = False,
    progress: bool = True,
) -> dict:
    """Evaluate a patch descriptor on a PhotoTour pairs list (the balanced m50 file).

    Each patch referenced by ``data.matches`` is described once; pair distance = L2.

    Args:
        extractor: callable (B, 1, P, P) float32 [0, 1] -> (B, D) (``registry.load(...)``).
        data: PhotoTourData with ``patches`` (N, 64, 64) uint8, ``point_ids``, ``matches`` (M, 3).
        batch: patches per extractor call.
        n_neg: negatives per query for ``cmc1`` (the positives of the pairs list are the queries;
            negatives are drawn from the other positive pairs' second patches only; the paper's
            protocol is ``fracking_protocol.evaluate_fracking``).
        return_arrays: also return ``distances``, ``labels`` (M,) and the ``cmc`` curve.
    Returns:
        dict with ``fpr95``, ``pr_auc``, ``roc_auc``, ``cmc1`` (fractions in [0, 1]),
        ``n_pairs``, ``n_pos``, ``cmc_negatives`` (+ arrays if asked).
    """
    uniq, desc = describe_rows(extractor, data, _m50_rows(data), batch, progress)
    return _score_pairs(data, uniq, desc, n_neg, seed, return_arrays)


def evaluate_phototour(
    extractor: Any,
    data: Any,
    batch: int = 1024,
    n_neg: int = CMC_NEGATIVES,
    seed: int = 0,
    fracking_points: int = FRACKING_POINTS,
    fracking_negatives: int = FRACKING_NEGATIVES,
    fracking_folds: int = FRACKING_FOLDS,
    return_arrays: bool = False,
    progress: bool = True,
    folds: list[FrackingFold] | None = None,
) -> dict:
    """:func:`evaluate_pairs` (m50) and ``fracking_protocol.evaluate_fracking`` from one
    description pass.

    Args:
        folds: already sampled folds (then ``fracking_*`` are ignored), e.g. to score several
            descriptors on the same sets without resampling; default: sampled here with
            ``seed``.
    Returns:
        {"m50": evaluate_pairs dict, "fracking": evaluate_fracking dict}; the patches of both
        are described together once (each patch's descriptor does not depend on the others).
    """
    m50_rows = _m50_rows(data)
    if folds is None:
        folds = sample_fracking_folds(
            data.point_ids, fracking_points, fracking_negatives, fracking_folds, seed
        )
    uniq, desc = describe_rows(extractor, data, [m50_rows] + fold_rows(folds), batch, progress)
    fr = fracking_scores(desc, folds, uniq)
    fr["seed"] = int(seed)
    return {"m50": _score_pairs(data, uniq, desc, n_neg, seed, return_arrays), "fracking": fr}
