"""Patch-descriptor evaluation metrics (pure numpy) and the PhotoTour pair evaluation.

Conventions: ``distances`` are descriptor distances (smaller = more similar), ``labels`` are
1 for a matching pair and 0 for a non-matching one. ``scores`` (HPatches helpers) are
similarities (larger = more similar).

- :func:`fpr95`: HardNet's ``EvalMetrics.ErrorRateAt95Recall`` restated exactly (FORMATS.md
  section 5), including the ``1 / (d + 1e-8)`` round trip and numpy's default (unstable) sort.
- :func:`pr_auc` / :func:`pr_curve`: average precision of score = -distance, tie aware (tied
  distances form one threshold), = ``sklearn.metrics.average_precision_score(labels, -d)``.
- :func:`roc_auc` / :func:`roc_curve`: area under the ROC curve; a tie between a positive and a
  negative counts 1/2 (Mann-Whitney), = ``sklearn.metrics.roc_auc_score(labels, -d)``.
- :func:`cmc`, :func:`cmc_auc`: cumulative match characteristic (ranks of 1 true positive
  among K negatives) and its normalised area; :func:`cmc_1_vs_n`: the CMC of a list of positive
  pairs, negatives drawn from the other pairs' second patches (``evaluate_pairs``' ``cmc1``).
- :func:`pr_roc_auc_split`: PR-AUC and ROC-AUC of (positives, negatives) without a pooled sort.
- :func:`hpatches_pr`, :func:`hpatches_ap`, :func:`hpatches_roc`, :func:`hpatches_auc`: the
  hpatches-benchmark ``metrics.pr`` / ``metrics.roc`` (FORMATS.md section 4): stable mergesort,
  missing positives appended at -inf and never retrieved, trapezoid integration.
- :func:`evaluate_pairs`: FPR95, PR-AUC, ROC-AUC and CMC@1 of an extractor on a
  :class:`~descriptors.data.phototour.PhotoTourData` pairs list (the m50 file, balanced 1:1).
- :func:`sample_fracking_folds`, :func:`fracking_scores`, :func:`evaluate_fracking`: the
  evaluation protocol of Simo-Serra et al. (fracking, Sec. 4 / 4.5 / 6): per fold, 10,000 unique
  3D points, each with 1 positive and 1,000 random non-corresponding patches; PR-AUC on those
  imbalanced (1:1000) sets, ROC-AUC, CMC curve and its AUC, averaged over 10 folds.
- :func:`evaluate_phototour`: both of the above from one description pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

RECALL_POINT: float = 0.95
CMC_NEGATIVES: int = 1000
FRACKING_POINTS: int = 10_000  # unique 3D points per fold (fracking Sec. 4 / 4.5)
FRACKING_NEGATIVES: int = 1000  # non-corresponding patches per point
FRACKING_FOLDS: int = 10  # test folds (Sec. 4.5, supplemental Sec. 6.5)


def _trapz(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid rule (numpy.trapz, removed in numpy 2)."""
    y = np.asarray(y, np.float64)
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _check(distances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if len(d) != len(y):
        raise ValueError(f"{len(d)} distances but {len(y)} labels")
    return d, y


# ----------------------------------------------------------------------------- FPR95
def fpr95(distances: np.ndarray, labels: np.ndarray, recall_point: float = RECALL_POINT) -> float:
    """False positive rate at 95 % recall, exactly as HardNet's ``ErrorRateAt95Recall``.

    Definition (HardNet passes ``scores = 1 / (d + 1e-8)`` and the function converts back)::

        scores = 1 / (d + 1e-8);  dist = 1 / (scores + 1e-8)
        L   = labels[argsort(dist)]                       # numpy default sort (ties: unstable)
        thr = first i with cumsum(L)[i] >= 0.95 * sum(L)
        FPR95 = count(L[:thr] == 0) / (count(L[:thr] == 0) + count(L[thr:] == 0))

    i.e. the fraction of all negatives ranked strictly before the positive at which recall
    reaches 95 %. The arithmetic is done in the input's float dtype (float32 descriptors give
    float32 distances in HardNet, and the round trip can merge nearly tied values).

    Args:
        distances: (M,) pair distances (smaller = more similar).
        labels: (M,) 1 = matching pair, 0 = non-matching.
    Returns:
        FPR95 in [0, 1] (NaN if there are no negatives).
    """
    d, y = _check(distances, labels)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    scores = 1.0 / (d + 1e-8)
    dist = 1.0 / (scores + 1e-8)
    y = y[np.argsort(dist)]
    threshold_index = int(np.argmax(np.cumsum(y) >= recall_point * np.sum(y)))
    fp = int(np.sum(y[:threshold_index] == 0))
    tn = int(np.sum(y[threshold_index:] == 0))
    if fp + tn == 0:
        return float("nan")
    return float(fp) / float(fp + tn)


# ----------------------------------------------------------------------------- PR / ROC
def _threshold_counts(
    distances: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Cumulative (tp, fp) at each distinct distance threshold d <= t, ascending t.

    Returns tp (T,), fp (T,), thresholds (T,), P, N.
    """
    d, y = _check(distances, labels)
    d = d.astype(np.float64)
    y = (y > 0).astype(np.int64)
    order = np.argsort(d, kind="mergesort")
    d, y = d[order], y[order]
    # last index of each run of equal distances
    last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    return tp, fp, d[last], int(y.sum()), int(len(y) - y.sum())


def pr_curve(
    distances: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision / recall when accepting pairs with distance <= t, for every distinct t.

    Returns:
        precision (T,), recall (T,), thresholds (T,), thresholds ascending (recall
        non-decreasing). Tied distances form a single point.
    """
    tp, fp, thr, p, _ = _threshold_counts(distances, labels)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(p, 1)
    return precision.astype(np.float64), recall.astype(np.float64), thr


def pr_auc(distances: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of score = -distance (area under the step PR curve).

    Definition: AP = sum_k (R_k - R_{k-1}) * P_k over the distinct distance thresholds t_1 <
    t_2 < ... (accepting d <= t_k), R_0 = 0. Tie aware (a tied group enters at once); equal to
    ``sklearn.metrics.average_precision_score(labels, -distances)``.

    Returns:
        AP in [0, 1] (NaN without positives).
    """
    tp, fp, _, p, _ = _threshold_counts(distances, labels)
    return _ap_from_counts(tp, fp, p)


def _ap_from_counts(tp: np.ndarray, fp: np.ndarray, p: int) -> float:
    """AP from cumulative (tp, fp) at the distinct thresholds (see :func:`pr_auc`)."""
    if len(tp) == 0 or p == 0:
        return float("nan")
    precision = (tp / np.maximum(tp + fp, 1)).astype(np.float64)
    recall = (tp / p).astype(np.float64)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _auc_from_counts(tp: np.ndarray, fp: np.ndarray, p: int, n: int) -> float:
    """ROC AUC from cumulative (tp, fp) at the distinct thresholds (see :func:`roc_auc`)."""
    if p == 0 or n == 0:
        return float("nan")
    return _trapz(np.r_[0.0, tp / p], np.r_[0.0, fp / n])


def roc_curve(
    distances: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC when accepting pairs with distance <= t.

    Returns:
        fpr (T+1,), tpr (T+1,), thresholds (T+1,): starts at (0, 0) with threshold -inf, then
        one point per distinct distance, ascending.
    """
    tp, fp, thr, p, n = _threshold_counts(distances, labels)
    tpr = np.r_[0.0, tp / max(p, 1)]
    fpr = np.r_[0.0, fp / max(n, 1)]
    return fpr, tpr, np.r_[-np.inf, thr]


def roc_auc(distances: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of score = -distance.

    Definition: trapezoid area of :func:`roc_curve` = P(d_pos < d_neg) + 1/2 P(d_pos == d_neg)
    over all (positive, negative) pairs (Mann-Whitney U / (P N)); equal to
    ``sklearn.metrics.roc_auc_score(labels, -distances)``.

    Returns:
        AUC in [0, 1] (NaN without positives or negatives).
    """
    tp, fp, _, p, n = _threshold_counts(distances, labels)
    return _auc_from_counts(tp, fp, p, n)


# ----------------------------------------------------------------------------- CMC
def cmc(dist_pos: np.ndarray, dist_neg: np.ndarray) -> np.ndarray:
    """Cumulative match characteristic.

    The rank of query q is the number of its negatives at distance <= its positive's distance
    (ties count against the positive, so a constant descriptor scores CMC@1 = 0).

    Args:
        dist_pos: (Q,) distance of each query to its true positive.
        dist_neg: (Q, K) distances of each query to its K negatives.
    Returns:
        (K+1,) float64: ``c[k]`` = fraction of queries with rank <= k; CMC@1 = ``c[0]``,
        CMC@r = ``c[r-1]``, ``c[K]`` = 1.
    """
    dp = np.asarray(dist_pos, np.float64).reshape(-1)
    dn = np.asarray(dist_neg, np.float64)
    if dn.ndim != 2 or len(dn) != len(dp):
        raise ValueError(f"dist_neg must be (Q, K) with Q = {len(dp)}, got {dn.shape}")
    k = dn.shape[1]
    if len(dp) == 0:
        return np.full(k + 1, np.nan)
    ranks = (dn <= dp[:, None]).sum(1)
    return np.cumsum(np.bincount(ranks, minlength=k + 1)) / float(len(dp))


def cmc_auc(curve: np.ndarray) -> float:
    """Normalised area under a CMC curve from :func:`cmc`.

    Definition: the curve is a unit-width step function over the K+1 possible ranks 1..K+1 of
    the true match among K negatives, so AUC = mean(curve) = 1 - E[rank0] / (K+1), with rank0
    the number of negatives at distance <= the positive's. A perfect descriptor scores 1, a
    random one ~0.5 (close to the ROC AUC, as in the fracking paper's Tables 14-19), a constant
    one 1/(K+1).

    Args:
        curve: (K+1,) CMC curve, ``curve[k]`` = fraction of queries with rank0 <= k.
    Returns:
        AUC in [0, 1] (NaN for an empty curve).
    """
    c = np.asarray(curve, np.float64).reshape(-1)
    if len(c) == 0 or np.isnan(c).any():
        return float("nan")
    return float(c.mean())


def cmc_1_vs_n(
    desc_a: np.ndarray,
    desc_b: np.ndarray,
    point_ids: np.ndarray,
    n_neg: int = CMC_NEGATIVES,
    rng: np.random.Generator | int | None = 0,
    chunk: int = 256,
) -> np.ndarray:
    """CMC of positive pairs: each query against 1 true positive and ``n_neg`` negatives drawn
    from the other pairs' second patches (the paper's protocol, with negatives from all patches
    of other 3D points, is :func:`evaluate_fracking`).

    Query i is ``desc_a[i]``; its true positive is ``desc_b[i]`` (another patch of the same 3D
    point ``point_ids[i]``); its negatives are ``n_neg`` distinct rows j of ``desc_b`` drawn
    uniformly among those with ``point_ids[j] != point_ids[i]`` (capped at the number
    available). Distances are L2. See :func:`cmc` for the rank and ties.

    Args:
        desc_a, desc_b: (Q, D) descriptors of the two patches of each positive pair.
        point_ids: (Q,) 3D point of pair i.
        n_neg: negatives per query.
        rng: numpy Generator or seed (the draw is deterministic for a seed).
    Returns:
        (K+1,) CMC curve with K = min(n_neg, min over queries of available negatives).
    """
    a = np.asarray(desc_a, np.float32)
    b = np.asarray(desc_b, np.float32)
    ids = np.asarray(point_ids).reshape(-1)
    q = len(a)
    if b.shape != a.shape or len(ids) != q:
        raise ValueError(
            f"desc_a {a.shape}, desc_b {b.shape} and point_ids ({len(ids)},) "
            "must describe the same pairs"
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if q == 0:
        return np.full(1, np.nan)
    _, counts = np.unique(ids, return_counts=True)
    k = int(min(n_neg, q - counts.max()))
    if k <= 0:
        raise ValueError("cmc_1_vs_n needs pairs of at least two different 3D points")
    # one formula (float64 ||a||^2 + ||b||^2 - 2 a.b) for positives and negatives, so exactly
    # equal descriptors give exactly equal distances (ties are then counted against the query)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = (a64**2).sum(1), (b64**2).sum(1)
    dist_pos = np.empty(q, np.float64)
    dist_neg = np.empty((q, k), np.float64)
    for s in range(0, q, chunk):
        e = min(q, s + chunk)
        keys = rng.random((e - s, q))
        keys[ids[s:e, None] == ids[None, :]] = np.inf  # same point: never a negative
        idx = np.argpartition(keys, k - 1, axis=1)[:, :k]  # k distinct random negatives
        sq = na[s:e, None] + nb[None, :] - 2.0 * (a64[s:e] @ b64.T)
        dist_neg[s:e] = np.sqrt(np.maximum(np.take_along_axis(sq, idx, 1), 0.0))
        dist_pos[s:e] = np.sqrt(np.maximum(sq[np.arange(e - s), np.arange(s, e)], 0.0))
    return cmc(dist_pos, dist_neg)


# ----------------------------------------------------------------------------- HPatches
def hpatches_tpfp(
    scores: np.ndarray, labels: np.ndarray, numpos: int | None = None
) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray]:
    """hpatches-benchmark ``metrics.tpfp``.

    ``n`` = #labels - #positives (counted before padding). If ``numpos`` exceeds the positives
    present, the missing ones are appended with score -inf. Sort by descending score with a
    STABLE mergesort, drop the trailing -inf entries (never retrieved), and accumulate.

    Returns:
        tp (R+1,), fp (R+1,) cumulative counts with a leading 0, p, n, perm (R,) kept order.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    p = int(np.sum(labels))
    n = len(labels) - p
    if numpos is not None:
        if numpos < p:
            raise ValueError(f"numpos={numpos} smaller than the {p} positives in labels")
        extra = int(numpos) - p
        p = int(numpos)
        scores = np.hstack((scores, np.repeat(-np.inf, extra)))
        labels = np.hstack((labels, np.repeat(1, extra)))
    perm = np.argsort(-scores, kind="mergesort", axis=0)
    finite = np.flatnonzero(scores[perm] > -np.inf)
    stop = int(finite.max()) if len(finite) else -1
    perm = perm[: stop + 1]
    lab = labels[perm]
    tp = np.hstack((0, np.cumsum(lab == 1)))
    fp = np.hstack((0, np.cumsum(lab == 0)))
    return tp, fp, p, n, perm


def hpatches_pr(
    scores: np.ndarray, labels: np.ndarray, numpos: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """hpatches-benchmark ``metrics.pr``: recall = tp/p, precision = max(tp, 1e-10) /
    max(tp + fp, 1e-10) (so the first point has precision 1), AP = trapz(precision, recall).

    Returns:
        precision (R+1,), recall (R+1,), AP.
    """
    tp, fp, p, _, _ = hpatches_tpfp(scores, labels, numpos)
    small = 1e-10
    recall = tp / float(max(p, small))
    precision = np.maximum(tp, small) / np.maximum(tp + fp, small)
    return precision, recall, _trapz(precision, recall)


def hpatches_ap(scores: np.ndarray, labels: np.ndarray, numpos: int | None = None) -> float:
    """AP of hpatches-benchmark ``metrics.pr`` (see :func:`hpatches_pr`)."""
    return hpatches_pr(scores, labels, numpos)[2]


def hpatches_roc(
    scores: np.ndarray, labels: np.ndarray, numpos: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """hpatches-benchmark ``metrics.roc``: tpr = tp/p, fpr = fp/n, AUC = trapz(tpr, fpr).

    Returns:
        fpr (R+1,), tpr (R+1,), AUC.
    """
    tp, fp, p, n, _ = hpatches_tpfp(scores, labels, numpos)
    small = 1e-10
    tpr = tp / float(max(p, small))
    fpr = fp / float(max(n, small))
    return fpr, tpr, _trapz(tpr, fpr)


def hpatches_auc(scores: np.ndarray, labels: np.ndarray, numpos: int | None = None) -> float:
    """AUC of hpatches-benchmark ``metrics.roc`` (see :func:`hpatches_roc`)."""
    return hpatches_roc(scores, labels, numpos)[2]


# ----------------------------------------------------------------------------- PhotoTour
def describe_patches(
    extractor: Any, patches_uint8: np.ndarray, batch: int = 1024, progress: bool = True
) -> np.ndarray:
    """(N, 64, 64) uint8 Brown patches -> (N, D) float32 descriptors (resized to the
    extractor's patch size, 32 by default, with cv2 INTER_AREA as HardNet)."""
    from tqdm import tqdm

    from descriptors.patches import patches_to_input

    size = int(extractor.patch_size)
    n = len(patches_uint8)
    out = []
    step = max(batch, 1) * 8
    for s in tqdm(
        range(0, n, step),
        desc=f"describe {extractor.name}",
        unit="chunk",
        disable=True if (not progress or n <= step) else None,
    ):
        x = patches_to_input(patches_uint8[s : s + step], size, cv2.INTER_AREA)
        for i in range(0, len(x), batch):
            out.append(np.asarray(extractor(x[i : i + batch]), np.float32))
    if not out:
        return np.zeros((0, int(extractor.dim)), np.float32)
    return np.concatenate(out, 0)


def _describe_rows(
    extractor: Any, data: Any, rows: Any, batch: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Describe the patches ``rows`` of ``data`` once -> (sorted unique rows (U,), desc (U, D)).

    ``rows``: an index array, or a list of index arrays (their union; no concatenated copy).
    """
    n = len(data.patches)
    used = np.zeros(n, bool)  # O(N) union, no sort of the rows
    for r in rows if isinstance(rows, list) else [rows]:
        r = np.asarray(r)
        if r.size and (r.min() < 0 or r.max() >= n):
            raise ValueError(
                f"{getattr(data, 'root', 'data')}: patch index out of range for {n} patches"
            )
        used[r.reshape(-1)] = True
    uniq = np.flatnonzero(used)
    return uniq, describe_patches(extractor, data.patches[uniq], batch=batch, progress=progress)


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
            protocol is :func:`evaluate_fracking`).
        return_arrays: also return ``distances``, ``labels`` (M,) and the ``cmc`` curve.
    Returns:
        dict with ``fpr95``, ``pr_auc``, ``roc_auc``, ``cmc1`` (fractions in [0, 1]),
        ``n_pairs``, ``n_pos``, ``cmc_negatives`` (+ arrays if asked).
    """
    uniq, desc = _describe_rows(extractor, data, _m50_rows(data), batch, progress)
    return _score_pairs(data, uniq, desc, n_neg, seed, return_arrays)


# ----------------------------------------------------------------------------- fracking protocol
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


def pr_roc_auc_split(dist_pos: np.ndarray, dist_neg: np.ndarray) -> tuple[float, float]:
    """(:func:`pr_auc`, :func:`roc_auc`) of positives ``dist_pos`` vs negatives ``dist_neg``
    without sorting the labelled union (for 1:1000 sets with millions of negatives).

    Same definitions, tie aware: with tp(t) = #pos <= t and fp(t) = #neg <= t, AP = sum over the
    distinct positive distances t of (#pos == t) / P * tp(t) / (tp(t) + fp(t)); ROC AUC =
    sum over positives of (#neg > d + 1/2 #neg == d) / (P N).

    Args:
        dist_pos: (P,) positive distances; dist_neg: any shape, negative distances.
    Returns:
        (AP, AUC); NaN where P (or N for the AUC) is 0.
    """
    dp = np.sort(np.asarray(dist_pos).reshape(-1))
    dn = np.sort(np.asarray(dist_neg).reshape(-1))
    p, n = len(dp), len(dn)
    if p == 0:
        return float("nan"), float("nan")
    t, first = np.unique(dp, return_index=True)
    tp = np.r_[first[1:], p].astype(np.float64)  # #pos <= t for each distinct t
    fp = np.searchsorted(dn, t, side="right").astype(np.float64)
    ap = float(np.sum(np.diff(np.r_[0.0, tp]) / p * tp / (tp + fp)))
    if n == 0:
        return ap, float("nan")
    le = np.searchsorted(dn, dp, side="right")
    lt = np.searchsorted(dn, dp, side="left")
    auc = float(np.sum((n - le) + 0.5 * (le - lt)) / (float(p) * n))
    return ap, auc


def fracking_scores(
    desc: np.ndarray, folds: list[FrackingFold], rows: np.ndarray | None = None
) -> dict:
    """Fracking-protocol metrics from descriptors (Simo-Serra et al., Sec. 4.5 and Sec. 6).

    Per fold: the Q positive distances and Q*K negative distances form one imbalanced (1:K)
    set; PR-AUC = :func:`pr_auc` and ROC-AUC = :func:`roc_auc` on it (distance = L2, accept
    d <= t; computed by :func:`pr_roc_auc_split`); CMC = :func:`cmc` of each anchor's positive against its own K negatives (ties count
    against the positive), CMC AUC = :func:`cmc_auc`. Reported numbers are means over folds
    (the paper's "Avg." column), with the per-fold values and the standard deviation.

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


def _fold_rows(folds: list[FrackingFold]) -> list[np.ndarray]:
    """Every patch index of the folds, as a list of arrays (see :func:`_describe_rows`)."""
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
    described once (64 -> 32 as :func:`describe_patches`).

    Args:
        extractor: callable (B, 1, P, P) float32 [0, 1] -> (B, D).
        data: :class:`~descriptors.data.phototour.PhotoTourData` (``patches``, ``point_ids``).
        n_points, n_neg, n_folds: protocol size (scaled down on small splits); seed: sampling.
    Returns:
        :func:`fracking_scores` dict plus ``seed``.
    """
    folds = sample_fracking_folds(data.point_ids, n_points, n_neg, n_folds, seed)
    uniq, desc = _describe_rows(extractor, data, _fold_rows(folds), batch, progress)
    out = fracking_scores(desc, folds, uniq)
    out["seed"] = int(seed)
    return out


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
    """:func:`evaluate_pairs` (m50) and :func:`evaluate_fracking` from one description pass.

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
    uniq, desc = _describe_rows(extractor, data, [m50_rows] + _fold_rows(folds), batch, progress)
    fr = fracking_scores(desc, folds, uniq)
    fr["seed"] = int(seed)
    return {"m50": _score_pairs(data, uniq, desc, n_neg, seed, return_arrays), "fracking": fr}
