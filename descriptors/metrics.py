"""Patch-descriptor evaluation metrics (pure numpy, no extractor).

Conventions: ``distances`` are descriptor distances (smaller = more similar), ``labels`` are
1 for a matching pair and 0 for a non-matching one. ``scores`` (HPatches helpers) are
similarities (larger = more similar).

- :func:`fpr95`: HardNet's ``EvalMetrics.ErrorRateAt95Recall`` restated exactly (FORMATS.md
  section 5), including the ``1 / (d + 1e-8)`` round trip and numpy's default (unstable) sort.
- :func:`pr_auc` / :func:`pr_curve`: average precision of score = -distance, tie aware (tied
  distances form one threshold), = ``sklearn.metrics.average_precision_score(labels, -d)``.
- :func:`roc_auc` / :func:`roc_curve`: area under the ROC curve; a tie between a positive and a
  negative counts 1/2 (Mann-Whitney), = ``sklearn.metrics.roc_auc_score(labels, -d)``.
- :func:`pr_roc_auc_split`: PR-AUC and ROC-AUC of (positives, negatives) without a pooled sort.
- :func:`cmc`, :func:`cmc_auc`: cumulative match characteristic (ranks of 1 true positive
  among K negatives) and its normalised area; :func:`cmc_1_vs_n`: the CMC of a list of positive
  pairs, negatives drawn from the other pairs' second patches
  (``descriptors.phototour_eval.evaluate_pairs``' ``cmc1``).
- :func:`hpatches_pr`, :func:`hpatches_ap`, :func:`hpatches_roc`, :func:`hpatches_auc`: the
  hpatches-benchmark ``metrics.pr`` / ``metrics.roc`` (FORMATS.md section 4): stable mergesort,
  missing positives appended at -inf and never retrieved, trapezoid integration.

Running an extractor on PhotoTour data: :mod:`descriptors.phototour_eval` (the m50 pairs list)
and :mod:`descriptors.fracking_protocol` (the fracking paper's folds).
"""

from __future__ import annotations

import numpy as np

RECALL_POINT: float = 0.95
CMC_NEGATIVES: int = 1000


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
    of other 3D points, is ``descriptors.fracking_protocol.evaluate_fracking``).

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
