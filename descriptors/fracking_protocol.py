"""The fracking paper's evaluation protocol on a PhotoTour split.

Simo-Serra et al., "Discriminative Learning of Deep Convolutional Feature Point Descriptors"
(ICCV 2015; arXiv 1412.6537), Sec. 4 / 4.5 / 6: per fold, 10,000 unique 3D points, each with
1 positive and 1,000 random non-corresponding patches; PR-AUC on those imbalanced (1:1000)
sets, ROC-AUC, CMC curve and its AUC, averaged over 10 folds.

- :func:`sample_fracking_folds`: the seeded folds (:class:`FrackingFold`, patch indices).
- :func:`fracking_scores`: the metrics of descriptors on those folds.
- :func:`evaluate_fracking`: both, for an extractor on a
  :class:`~descriptors.data.phototour.PhotoTourData` (every patch used described once).

The metric definitions are :mod:`descriptors.metrics`; the m50 pairs-list evaluation and the
one-pass evaluation of both protocols are :mod:`descriptors.phototour_eval`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from descriptors.metrics import cmc, cmc_auc, pr_roc_auc_split
from descriptors.patches import describe_rows

logger = logging.getLogger(__name__)

FRACKING_POINTS: int = 10_000  # unique 3D points per fold (fracking Sec. 4 / 4.5)
FRACKING_NEGATIVES: int = 1000  # non-corresponding patches per point
FRACKING_FOLDS: int = 10  # test folds (Sec. 4.5, supplemental Sec. 6.5)


@dataclass
class FrackingFold:
    """One fold of the fracking protocol, as patch indices.

    Attributes:
        anchor: (Q,) int64 one patch of each of the Q sampled 3D points.
        positive: (Q,) int64 another patch of the same point.
        negatives: (Q, K) int32 K distinct patches of other 3D points per row (int32: 10
            folds x 10,000 x 1,000 indices take 400 MB).
    """

    anchor: np.ndarray
    positive: np.ndarray
    negatives: np.ndarray

    def remap(self, uniq: np.ndarray) -> "FrackingFold":
        """Indices into ``uniq`` (sorted patch ids that contain every index of the fold)."""
        lut = np.full(int(uniq[-1]) + 1 if len(uniq) else 0, -1, np.int64)
        lut[uniq] = np.arange(len(uniq))
        return FrackingFold(
            lut[self.anchor], lut[self.positive], lut[self.negatives].astype(np.int32)
        )


def sample_fracking_folds(
    point_ids: np.ndarray,
    n_points: int = FRACKING_POINTS,
    n_neg: int = FRACKING_NEGATIVES,
    n_folds: int = FRACKING_FOLDS,
    seed: int = 0,
) -> list[FrackingFold]:
    """Seeded folds of the fracking evaluation protocol (Simo-Serra et al., Sec. 4 and 4.5).

    Per fold: ``n_points`` distinct 3D points drawn uniformly among those with >= 2 patches; for
    each, two distinct random patches of that point (anchor, positive) and ``n_neg`` distinct
    random patches of *other* points (uniform over all their patches). Folds are independent
    draws (fold f uses ``default_rng([seed, f])``, so fold f does not depend on ``n_folds``).
    Scaled down gracefully: Q = min(n_points, points with >= 2 patches) and K = min(n_neg,
    fewest patches of other points), with a log line when either is smaller than asked.

    Args:
        point_ids: (N,) 3D point id of each patch (``PhotoTourData.point_ids``).
    Returns:
        ``n_folds`` :class:`FrackingFold` with Q queries and K negatives each.
    Raises:
        ValueError: no point with two patches, or no patch of another point.
    """
    ids = np.asarray(point_ids).reshape(-1)
    n = len(ids)
    if n_points < 1 or n_neg < 1 or n_folds < 1:
        raise ValueError(
            f"fracking protocol needs n_points, n_neg, n_folds >= 1, got "
            f"{n_points}, {n_neg}, {n_folds}"
        )
    order = np.argsort(ids, kind="stable")
    _, start, count = np.unique(ids[order], return_index=True, return_counts=True)
    eligible = np.flatnonzero(count >= 2)
    if len(eligible) == 0:
        raise ValueError(
            f"fracking protocol: none of the {n} patches shares its 3D point with "
            "another patch (need points with >= 2 patches)"
        )
    q = int(min(n_points, len(eligible)))
    k = int(min(n_neg, n - count[eligible].max()))
    if k < 1:
        raise ValueError("fracking protocol: all patches belong to one 3D point (no negatives)")
    if q < n_points or k < n_neg:
        logger.info(
            "fracking protocol scaled down to %d points x %d negatives per fold "
            "(%d points with >= 2 patches, %d patches)",
            q,
            k,
            len(eligible),
            n,
        )
    folds = []
    for f in range(n_folds):
        rng = np.random.default_rng([seed, f])
        pts = eligible[rng.choice(len(eligible), q, replace=False)]
        st, c = start[pts], count[pts]
        i1 = rng.integers(0, c)
        i2 = rng.integers(0, c - 1)
        i2 = i2 + (i2 >= i1)  # distinct from i1, uniform over the rest
        neg = np.empty((q, k), np.int32)
        for r in range(q):
            # uniform over the n - c sorted positions outside the point's block [st, st + c)
            u = rng.choice(n - c[r], k, replace=False)
            neg[r] = np.where(u >= st[r], u + c[r], u)
        folds.append(FrackingFold(order[st + i1], order[st + i2], order[neg].astype(np.int32)))
    return folds


def _fold_distances(
    desc: np.ndarray, fold: FrackingFold, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """L2 distances anchor-positive (Q,) and anchor-negatives (Q, K), float32.

    Positives and negatives go through one formula (sum of squared differences of the gathered
    rows), so identical descriptors give exactly equal distances and ties stay ties.
    """
    x = np.asarray(desc, np.float32)
    q, k = fold.negatives.shape
    idx = np.concatenate([fold.positive[:, None], fold.negatives], 1)  # (Q, 1 + K)
    sq = np.empty((q, k + 1), np.float32)
    for s in range(0, q, chunk):
        e = min(q, s + chunk)
        diff = x[idx[s:e]]
        diff -= x[fold.anchor[s:e]][:, None, :]
        sq[s:e] = np.einsum("qkd,qkd->qk", diff, diff)
    d = np.sqrt(sq)
    return d[:, 0].copy(), d[:, 1:]


def fracking_scores(
    desc: np.ndarray, folds: list[FrackingFold], rows: np.ndarray | None = None
) -> dict:
    """Fracking-protocol metrics from descriptors (Simo-Serra et al., Sec. 4.5 and Sec. 6).

    Per fold: the Q positive distances and Q*K negative distances form one imbalanced (1:K)
    set; PR-AUC = ``metrics.pr_auc`` and ROC-AUC = ``metrics.roc_auc`` on it (distance = L2,
    accept d <= t; computed by ``metrics.pr_roc_auc_split``); CMC = ``metrics.cmc`` of each
    anchor's positive against its own K negatives (ties count against the positive), CMC AUC =
    ``metrics.cmc_auc``. Reported numbers are means over folds (the paper's "Avg." column), with
    the per-fold values and the standard deviation.

    Args:
        desc: (U, D) descriptors; fold indices index its rows, or, with ``rows``, desc[i] is
            patch ``rows[i]`` (sorted) and each fold is remapped when scored (one at a time).
        folds: from :func:`sample_fracking_folds`.
    Returns:
        dict: ``pr_auc``, ``roc_auc``, ``cmc_auc``, ``cmc1``, ``cmc5`` (fold means, fractions),
        ``<name>_folds`` lists and ``<name>_std``, ``cmc`` (K+1,) mean curve, ``n_points`` (Q),
        ``n_negatives`` (K), ``n_folds``.
    """
    if not folds:
        raise ValueError("fracking_scores needs at least one fold")
    per: dict[str, list[float]] = {k: [] for k in ("pr_auc", "roc_auc", "cmc_auc", "cmc1", "cmc5")}
    curves = []
    for fold in folds:
        dpos, dneg = _fold_distances(desc, fold if rows is None else fold.remap(rows))
        ap, auc = pr_roc_auc_split(dpos, dneg)
        c = cmc(dpos, dneg)
        per["pr_auc"].append(ap)
        per["roc_auc"].append(auc)
        per["cmc_auc"].append(cmc_auc(c))
        per["cmc1"].append(float(c[0]))
        per["cmc5"].append(float(c[min(4, len(c) - 1)]))
        curves.append(c)
    out: dict[str, Any] = {}
    for key, vals in per.items():
        out[key] = float(np.mean(vals))
        out[f"{key}_std"] = float(np.std(vals))
        out[f"{key}_folds"] = [float(v) for v in vals]
    out["cmc"] = np.mean(np.stack(curves), 0)
    q, k = folds[0].negatives.shape
    out.update(n_points=int(q), n_negatives=int(k), n_folds=len(folds))
    return out


def fold_rows(folds: list[FrackingFold]) -> list[np.ndarray]:
    """Every patch index of the folds, as a list of arrays (``patches.describe_rows``' rows)."""
    return [a for f in folds for a in (f.anchor, f.positive, f.negatives)]


def evaluate_fracking(
    extractor: Any,
    data: Any,
    n_points: int = FRACKING_POINTS,
    n_neg: int = FRACKING_NEGATIVES,
    n_folds: int = FRACKING_FOLDS,
    seed: int = 0,
    batch: int = 1024,
    progress: bool = True,
) -> dict:
    """The fracking paper's evaluation protocol on a PhotoTour split.

    Simo-Serra et al., "Discriminative Learning of Deep Convolutional Feature Point
    Descriptors" (ICCV 2015; arXiv 1412.6537): Sec. 4 ("for each of the 10,000 unique points
    ... two corresponding patches and 1,000 non-corresponding patches"), Sec. 4.5 (test sets:
    the same over 10 folds, 100,000 sets of 1 positive vs 1,000 negatives; PR AUC) and the
    supplemental Sec. 6 / 6.5 (ROC AUC and CMC AUC of the same folds). Sampling:
    :func:`sample_fracking_folds`; metrics: :func:`fracking_scores`. Every patch used is
    described once (64 -> 32 as ``descriptors.patches.describe_patches``).

    Args:
        extractor: callable (B, 1, P, P) float32 [0, 1] -> (B, D).
        data: :class:`~descriptors.data.phototour.PhotoTourData` (``patches``, ``point_ids``).
        n_points, n_neg, n_folds: protocol size (scaled down on small splits); seed: sampling.
    Returns:
        :func:`fracking_scores` dict plus ``seed``.
    """
    folds = sample_fracking_folds(data.point_ids, n_points, n_neg, n_folds, seed)
    uniq, desc = describe_rows(extractor, data, fold_rows(folds), batch, progress)
    out = fracking_scores(desc, folds, uniq)
    out["seed"] = int(seed)
    return out
