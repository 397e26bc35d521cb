"""Descriptor losses: pure functions of descriptors / distance matrices.

Each recipe's loss lives in its own marked section below. All descriptors are L2-normalised
(B, D) float tensors; distances are Euclidean.
"""

from __future__ import annotations

import math

import torch


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Euclidean distance matrix between rows of a (Na, D) and b (Nb, D) -> (Na, Nb).

    Uses ||a||^2 + ||b||^2 - 2 a.b with a small eps inside the sqrt, as HardNet's
    ``distance_matrix_vector`` does (differentiable at 0).
    """
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2.0 * a @ b.t()
    return torch.sqrt(d2.clamp_min(0.0) + eps)


# === hardnet ===
def hardest_triplet_margin(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    margin: float = 1.0,
    anchor_swap: bool = True,
    negatives: str = "hardest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """HardNet loss (Mishchuk et al. 2017, arXiv 1705.10872, eq. 1-2).

    For the B matching pairs (a_i, p_i): D = dist(A, P) (B, B); d(a_i, p_i) = D_ii;
    the hardest negative is min_{j != i} D_ij (anchor side) and, with ``anchor_swap``,
    min(min_j D_ij, min_k D_ki) (positive side too). Loss:
        L = mean_i max(0, margin + D_ii - d_neg_i).
    Pairs closer than 0.008 (likely duplicates) are excluded from the negatives, as in the repo.

    Args:
        anchor, positive: (B, D) L2-normalised descriptors; row i of each is a matching pair.
        negatives: 'hardest' (HardNet) or 'random' (control: a random non-matching column).
    Returns:
        scalar loss.
    """
    from descriptors.mining import hardest_in_batch, random_negatives

    dist = pairwise_distance(anchor, positive)
    pos = torch.diagonal(dist)
    if negatives == "hardest":
        neg = hardest_in_batch(dist, anchor_swap=anchor_swap)
    elif negatives == "random":
        neg = random_negatives(dist, generator=generator)
    else:
        raise ValueError(f"negatives must be 'hardest' or 'random', got '{negatives}'")
    return torch.clamp(margin + pos - neg, min=0.0).mean()


# === hndesc ===
def quantized_ap(
    scores: torch.Tensor, labels: torch.Tensor, nq: int = 20, vmin: float = 0.0, vmax: float = 1.0
) -> torch.Tensor:
    """Differentiable average precision of ranked lists by soft quantisation (R2D2 / HNDesc).

    Revaud et al. 2019 (R2D2 ``nets/ap_loss.py``, used unchanged by HNDesc ``assets/loss.py``):
    ``nq`` bins with centres c_k = vmax - k (vmax - vmin) / (nq - 1), k = 0..nq-1 (descending);
    a score x belongs to bin k with the triangular weight
        delta_k(x) = max(0, 1 - a |x - c_k|),  a = (nq - 1) / (vmax - vmin),
    except that the first bin is open upwards (delta_0 = 1 for x >= vmax) and the last one
    downwards (delta_{nq-1} = 1 for x <= vmin), so every score spreads a total weight of 1 over
    the bins. With n_k = sum_j delta_k(x_j), n+_k = sum_j y_j delta_k(x_j):
        P_k = (sum_{l<=k} n+_l) / (sum_{l<=k} n_l),  r_k = n+_k / sum_l n+_l,
        AP = sum_k P_k r_k.

    Args:
        scores: (N, M) similarities (higher = more similar), nominally in [vmin, vmax].
        labels: (N, M) {0, 1} (or bool) relevance of each entry; every row needs a positive.
        nq: number of quantisation bins (HNDesc: 20; R2D2's default 25).
    Returns:
        (N,) AP per row in [0, 1].
    """
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(
            f"quantized_ap: scores {tuple(scores.shape)} and labels "
            f"{tuple(labels.shape)} must be the same (N, M) shape"
        )
    if not (isinstance(nq, int) and nq >= 2) or not vmax > vmin:
        raise ValueError(
            f"quantized_ap: need an integer nq >= 2 and vmax > vmin, got nq={nq}, [{vmin}, {vmax}]"
        )
    a = (nq - 1) / (vmax - vmin)
    centres = vmax - torch.arange(nq, dtype=scores.dtype, device=scores.device) / a  # (Q,)
    delta = 1.0 - a * (scores[:, None, :] - centres[None, :, None]).abs()  # (N, Q, M)
    delta[:, 0] = torch.where(scores >= vmax, torch.ones_like(scores), delta[:, 0])
    delta[:, -1] = torch.where(scores <= vmin, torch.ones_like(scores), delta[:, -1])
    delta = delta.clamp(min=0.0)
    y = labels.to(scores.dtype)[:, None, :]
    n_all = delta.sum(-1)  # (N, Q)
    n_pos = (delta * y).sum(-1)
    prec = n_pos.cumsum(-1) / (n_all.cumsum(-1) + 1e-16)
    rec = n_pos / n_pos.sum(-1, keepdim=True).clamp_min(1e-16)
    return (prec * rec).sum(-1)


def hndesc_ap_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    group_ids: torch.Tensor,
    k: int = 20,
    nq: int = 20,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HNDesc AP loss with in-batch hard negatives from other images (``APCriterion``).

    For keypoint i (anchor a_i, its positive p_i in the other view): the ranked list is its
    positive similarity s_ii = a_i . p_i followed by its ``k`` highest similarities a_i . p_j to
    the keypoints j of OTHER image pairs in the batch (``group_ids[j] != group_ids[i]``; the paper's
    in-batch hard negatives); rows with fewer than ``k`` such negatives repeat their last one (as
    the reference code pads). Keypoints whose pair has only one keypoint in the batch are
    skipped (code: ``kpts_per_crop > 1``). AP of the list with labels [1, 0, ..., 0]
    (``quantized_ap``, nq = 20 bins on [0, 1]); loss = mean_i (1 - AP_i).
    Reference values (HNDesc ``hndesc/criterion.py``: ``APCriterion(knn=20, nq=20, min_val=0,
    max_val=1)``): k = 20, nq = 20, cosine similarity of unit descriptors.

    Args:
        anchor, positive: (B, D) L2-normalised descriptors, row i of both = one keypoint.
        group_ids: (B,) int id of the image pair each keypoint comes from.
    Returns:
        (loss, mean AP) scalars.
    """
    b = anchor.shape[0]
    if positive.shape != anchor.shape or group_ids.shape != (b,):
        raise ValueError(
            f"hndesc_ap_loss: anchor {tuple(anchor.shape)}, positive "
            f"{tuple(positive.shape)}, group_ids {tuple(group_ids.shape)} do not fit"
        )
    g = group_ids.to(anchor.device)
    same = g[:, None] == g[None, :]
    keep = same.sum(1) > 1
    if not keep.any() or bool(same[keep].all()):
        raise ValueError("hndesc_ap_loss: the batch needs two image pairs with >= 2 keypoints")
    sim = anchor @ positive.t()  # (B, B)
    s_pos = sim.diagonal()
    neg = sim.masked_fill(same, float("-inf"))
    kk = min(int(k), b)
    top = neg.topk(kk, dim=1).values  # (B, kk)
    n_other = (~same).sum(1, keepdim=True)
    col = torch.arange(kk, device=sim.device)[None, :]
    last = top.gather(1, (n_other - 1).clamp(min=0, max=kk - 1))  # (B, 1)
    top = torch.where(col < n_other, top, last.expand_as(top))
    if kk < k:
        top = torch.cat([top, top[:, -1:].expand(-1, int(k) - kk)], 1)
    scores = torch.cat([s_pos[:, None], top], 1)[keep]
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    ap = quantized_ap(scores, labels, nq=nq, vmin=vmin, vmax=vmax)
    return (1.0 - ap).mean(), ap.mean()


# === wlrn ===


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows: (..., Na, D), (..., Nb, D) -> (..., Na, Nb)."""
    ab = a @ b.transpose(-1, -2)
    d2 = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2.0 * ab
    return d2.clamp_min(0.0)


def bag_soft_correspondence_count(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    tau: float = 0.8,
    beta: float = 20.0,
    mutual: bool = False,
    normalize: bool = True,
) -> torch.Tensor:
    """Differentiable count of keypoints of bag A that have a correspondence in bag B (wlrn).

    Markus, Pandzic, Ahlberg, "Learning Local Descriptors by Optimizing the Keypoint-Correspondence
    Criterion", arXiv 1603.09095, eq. (bag matching score) and its sigmoid relaxation:
        m(K_a, K_b) = sum_i [ min_j d_ij^2 <= tau ]  ~=  sum_i sigmoid(-beta (min_j d_ij^2 - tau)),
        S(K_a, K_b) = m / N_a                        (``normalize=True``; the paper's S),
    with d_ij = ||e(k_i) - e(k_j)||_2 (for unit descriptors d^2 = 2 - 2 cos, in [0, 4]).
    Paper values: tau = 0.8, beta = 20. ``mutual=True`` counts only keypoints i whose nearest
    neighbour j in B has i as its own nearest neighbour in A (a hard, gradient-free mask on the
    soft terms) -- an optional stricter variant, not the paper's default.

    Args:
        desc_a: (Na, D) or (T, Na, D) descriptors of bag(s) A.
        desc_b: (Nb, D) or (T, Nb, D) descriptors of bag(s) B.
    Returns:
        () or (T,) soft counts (fractions of N_a in [0, 1] if ``normalize``).
    """
    d2 = _sq_dist(desc_a, desc_b)  # (..., Na, Nb)
    dmin, nn_ab = d2.min(-1)  # (..., Na)
    soft = torch.sigmoid(-beta * (dmin - tau))
    if mutual:
        with torch.no_grad():
            nn_ba = d2.argmin(-2)  # (..., Nb)
            back = torch.gather(nn_ba, -1, nn_ab)  # (..., Na)
            idx = torch.arange(d2.shape[-2], device=d2.device)
            mask = (back == idx).to(soft.dtype)
        soft = soft * mask
    m = soft.sum(-1)
    return m / d2.shape[-2] if normalize else m


def wlrn_bag_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    tau: float = 0.8,
    beta: float = 20.0,
    eps: float = 1e-6,
    mode: str = "ratio",
    margin: float = 0.2,
    mutual: bool = False,
) -> torch.Tensor:
    """wlrn bag-triplet loss: matching bags must share more soft correspondences than non-matching.

    For bag triplets (K, K+, K-) (K, K+ = two views of one object; K- another object), with
    S = ``bag_soft_correspondence_count`` (normalised):
        mode='ratio' (arXiv 1603.09095 eq. loss):  L = mean_t S(K, K-) / (S(K, K+) + eps)
        mode='margin' (ranking hinge variant):     L = mean_t max(0, margin - (S(K, K+) - S(K, K-)))
    Paper: tau = 0.8, beta = 20, eps = 1e-6 (minibatches of 32 triplets, rmsprop lr 1e-3).

    Args:
        anchor, positive, negative: (T, n, D) (or (n, D)) descriptors of the three bags.
    Returns:
        scalar loss.
    """
    s_pos = bag_soft_correspondence_count(anchor, positive, tau, beta, mutual)
    s_neg = bag_soft_correspondence_count(anchor, negative, tau, beta, mutual)
    if mode == "ratio":
        return (s_neg / (s_pos + eps)).mean()
    if mode == "margin":
        return torch.clamp(margin - (s_pos - s_neg), min=0.0).mean()
    raise ValueError(f"wlrn_bag_loss: mode must be 'ratio' or 'margin', got '{mode}'")


def wlrn_bag_loss_batch(
    desc: torch.Tensor,
    object_ids: torch.Tensor,
    tau: float = 0.8,
    beta: float = 20.0,
    eps: float = 1e-6,
    mode: str = "ratio",
    margin: float = 0.2,
    mutual: bool = False,
) -> torch.Tensor:
    """``wlrn_bag_loss`` over every bag triplet that can be formed inside a batch of bags.

    With S[i, j] = ``bag_soft_correspondence_count(desc[i], desc[j])`` for all M x M bag pairs,
    each (i, j, k) with obj(i) == obj(j), i != j (K, K+) and obj(k) != obj(i) (K-) is a triplet:
        'ratio':  L = mean_{(i,j,k)} S[i, k] / (S[i, j] + eps)
        'margin': L = mean_{(i,j,k)} max(0, margin - (S[i, j] - S[i, k]))
    Same per-triplet loss as the paper's; only the triplet sampling differs (all triplets of a
    minibatch of bags instead of independently drawn ones), so every forward pass serves
    ~M^2 triplets.

    Args:
        desc: (M, n, D) descriptors of M bags of n keypoints.
        object_ids: (M,) int object label of each bag (the only supervision).
    Returns:
        scalar loss (0 if the batch holds no valid triplet).
    """
    s = bag_soft_correspondence_count(desc[:, None], desc[None, :], tau, beta, mutual)  # (M, M)
    ids = object_ids.to(desc.device).reshape(-1)
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(ids), dtype=torch.bool, device=desc.device)
    pos, neg = same & ~eye, ~same
    valid = pos[:, :, None] & neg[:, None, :]  # (i, j, k)
    if not valid.any():
        return desc.sum() * 0.0
    s_pos, s_neg = s[:, :, None], s[:, None, :]
    if mode == "ratio":
        per = s_neg / (s_pos + eps)
    elif mode == "margin":
        per = torch.clamp(margin - (s_pos - s_neg), min=0.0)
    else:
        raise ValueError(f"wlrn_bag_loss_batch: mode must be 'ratio' or 'margin', got '{mode}'")
    return per[valid].mean()


def wlrn_code_beta(thr: float = 0.8) -> float:
    """Sigmoid slope of the released wlrn code: sigmoid(beta (s - thr)) reaches 0.99 at s = 1,
    beta = -ln(1 / 0.99 - 1) / (1 - thr) = ln(99) / 0.2 = 22.98 for thr = 0.8."""
    return -math.log(1.0 / 0.99 - 1.0) / (1.0 - thr)


def wlrn_code_score(
    desc_a: torch.Tensor, desc_b: torch.Tensor, thr: float = 0.8, beta: float | None = None
) -> torch.Tensor:
    """Soft correspondence count of the released wlrn code (``wlrn.lua`` / ``wlrn.py``).

    s_ij = (1 + cos(e_i, e_j)) / 2 in [0, 1] (unit descriptors), each keypoint i of bag A keeps its
    best match in B, squashed by sigmoid(beta (s - thr)), summed (not normalised):
        m(A, B) = sum_i max_j sigmoid(beta (s_ij - thr)),  beta = ``wlrn_code_beta(thr)``.
    (For unit vectors s >= thr <=> d^2 <= 4 (1 - thr) = 0.8: the paper's tau, with a slope of
    beta / 4 = 5.7 on d^2 instead of the paper's 20.)

    Args:
        desc_a: (..., Na, D), desc_b: (..., Nb, D) unit descriptors (broadcast over leading dims).
    Returns:
        (...) soft counts in [0, Na].
    """
    b = wlrn_code_beta(thr) if beta is None else float(beta)
    sim = (1.0 + desc_a @ desc_b.transpose(-1, -2)) * 0.5
    return torch.sigmoid(b * (sim.max(-1).values - thr)).sum(-1)


def wlrn_code_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, thr: float = 0.8
) -> torch.Tensor:
    """The released wlrn loss of bag triplets: L = mean_t (1 + m(K, K-)) / (1 + m(K, K+)).

    ``m`` = ``wlrn_code_score``; the +1 on both sides is the code's additive smoothing (instead of
    the paper's eps on the denominator only).

    Args:
        anchor, positive, negative: (T, n, D) (or (n, D)) descriptors of the three bags.
    Returns:
        scalar loss.
    """
    s_pos = wlrn_code_score(anchor, positive, thr)
    s_neg = wlrn_code_score(anchor, negative, thr)
    return ((1.0 + s_neg) / (1.0 + s_pos)).mean()


# === fracking ===


def hinge_embedding(
    dist: torch.Tensor, is_pos: torch.Tensor, margin: float = 1.0, reduction: str = "none"
) -> torch.Tensor:
    """Hinge embedding loss on pair distances (fracking, arXiv 1412.6537 eq. 2-3).

        l = delta * l_P(d) + (1 - delta) * l_N(d),  l_P(d) = d,  l_N(d) = max(0, m - d),
    delta = 1 for corresponding pairs (same 3D point). Mobahi et al. 2009's criterion.

    Args:
        dist: (B,) L2 distances between the two descriptors of each pair.
        is_pos: (B,) bool / {0, 1}: pair corresponds.
        margin: m (distances of unit descriptors lie in [0, 2]; CNN3's in [0, sqrt 2]).
        reduction: 'none' -> (B,) per-pair losses (what the fracking miner ranks), 'mean', 'sum'.
    """
    pos = is_pos.to(dist.dtype)
    loss = pos * dist + (1.0 - pos) * torch.clamp(margin - dist, min=0.0)
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(
        f"hinge_embedding: reduction must be 'none', 'mean' or 'sum', got '{reduction}'"
    )


# === sdb ===
# Self-supervised sample difficulty balancing (Zhang & Tian, arXiv 2303.06124 / ACML 2023,
# PMLR 222:1654-1669). Formulas follow the authors' code (``Learning/losses.py``:
# ``tripletMargin_generalized_ExpTeacher``, ``generate_weight``,
# ``tripletMargin_generalized_Exponential``); flags in brackets are the code's command-line names.
SDB_WEIGHT_FNS = ("quadratic", "linear", "step", "bump", "none")


def sdb_hardest_pairs(
    dist: torch.Tensor, labels: torch.Tensor, duplicate_eps: float = 0.008
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class hardest positive and hardest negative pair (selection only, no gradient).

    For N descriptors with class ``labels`` (a 3D point / keypoint id; each class >= 2 views):
    row r's hardest positive is ``argmax_{l(c)=l(r)} D[r, c]`` and its hardest negative
    ``argmin_{l(c)!=l(r), D[r,c] > duplicate_eps} D[r, c]``; per class, the row with the largest
    positive distance gives the class's positive pair and the row with the smallest negative
    distance its negative pair (so every view of the class is an anchor: HardNet's anchor swap,
    generalised). With pairs (a_i, p_i) stacked as ``[A; P]`` and labels ``[0..B-1, 0..B-1]`` this
    is ``d(a_i, p_i)`` and ``min(min_j D(a_i, x_j), min_j D(p_i, x_j))`` over both views x.

    Args:
        dist: (N, N) distances (only read, detached).
        labels: (N,) int class ids.
    Returns:
        ``pos_i, pos_j, neg_i, neg_j`` (C,) int64 row/column indices into ``dist`` and
        ``valid`` (C,) bool (class has >= 2 members and some negative), C = number of classes.
    """
    n = dist.shape[0]
    if dist.shape != (n, n) or labels.shape != (n,):
        raise ValueError(
            f"sdb_hardest_pairs: dist {tuple(dist.shape)} and labels "
            f"{tuple(labels.shape)} do not fit (need (N, N) and (N,))"
        )
    with torch.no_grad():
        d = dist.detach()
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=d.device)
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        pos_d = torch.where(same & ~eye, d, -inf)
        row_pos, row_pos_j = pos_d.max(1)
        neg_d = torch.where(same | (d <= duplicate_eps), inf, d)
        row_neg, row_neg_j = neg_d.min(1)
        classes, inv = torch.unique(labels, return_inverse=True)
        member = inv[None, :] == torch.arange(len(classes), device=d.device)[:, None]  # (C, N)
        cls_pos, pos_i = torch.where(member, row_pos[None, :], -inf).max(1)
        cls_neg, neg_i = torch.where(member, row_neg[None, :], inf).min(1)
        valid = torch.isfinite(cls_pos) & torch.isfinite(cls_neg)
        return pos_i, row_pos_j[pos_i], neg_i, row_neg_j[neg_i], valid


def sdb_confidence_weight(
    margin: torch.Tensor,
    threshold: float = -0.55,
    upper: float = 0.10,
    fn: str = "quadratic",
    easy_width: float = 0.5,
) -> torch.Tensor:
    """Teacher confidence weight of a sample from its teacher margin ``c = d_neg^T - d_pos^T``.

    ``c`` large: trivially easy; ``c`` near 0: moderately hard; ``c`` very negative: the
    "negative" is much closer than the "positive" — most likely label noise (a false negative or
    a wrong positive), which the weight removes. With t = ``threshold`` [--threshold],
    u = ``upper`` [--upper] (t < u):

    - ``quadratic`` (code ``generate_weight``): w = 0 for c <= t; 1 - ((c - u) / (t - u))^2 for
      t < c < u; 1 for c >= u.
    - ``linear``: w = clip((c - t) / (u - t), 0, 1).
    - ``step``: w = [c > t] (the annealing stage's hard mask).
    - ``bump``: ``quadratic`` for c < u and exp(-((c - u) / easy_width)^2) above: also damps
      trivially easy samples explicitly (the default loss already gives them ~0 gradient).
    - ``none``: w = 1 (no teacher).
    With t == u the code uses w = 1; here ``quadratic``/``linear`` do the same.

    Args:
        margin: (C,) teacher margins (no gradient flows through the weight).
    Returns:
        (C,) weights in [0, 1].
    """
    c = margin.detach()
    if fn not in SDB_WEIGHT_FNS:
        raise ValueError(f"unknown SDB weight function '{fn}' (choose from {SDB_WEIGHT_FNS})")
    if fn == "none":
        return torch.ones_like(c)
    if fn == "step":
        return (c > threshold).to(c.dtype)
    if upper < threshold:
        raise ValueError(f"SDB weight: upper ({upper}) must be >= threshold ({threshold})")
    if upper == threshold:
        return torch.ones_like(c)
    if fn == "linear":
        return ((c - threshold) / (upper - threshold)).clamp(0.0, 1.0)
    cc = c.clamp(threshold, upper)
    w = 1.0 - ((cc - upper) / (threshold - upper)) ** 2
    w = torch.where(c <= threshold, torch.zeros_like(w), w)
    if fn == "bump":
        w = torch.where(c > upper, torch.exp(-(((c - upper) / easy_width) ** 2)), w)
    return w


def sdb_exp_loss(
    pos: torch.Tensor,
    neg: torch.Tensor,
    weight: torch.Tensor | float = 1.0,
    R: float = 1.0,
    B: float | None = 3.7,
    A: float = 1.05,
    reduction: str = "mean",
) -> tuple[torch.Tensor, float]:
    """Difficulty-balanced "exponential-form" loss (code ``ExpTeacher`` / ``tripletMargin++``).

        b~ = min(d_neg, B / 2)
        L_k = w_k * (R * d_pos^2 + b~^2 - B * b~)          (code adds a constant +5; omitted)

    so dL/d d_pos = 2 R w d_pos (pull, small for trivial positives) and
    dL/d d_neg = -w (B - 2 d_neg) for d_neg < B/2, 0 beyond (push, vanishing for negatives
    already farther than B/2: trivially easy ones). ``B=None`` is the code's ``--use_stB``:
    B = 2 (median(d_neg) + A * median(d_pos)) from the detached batch, i.e. negatives farther
    than the batch's typical negative plus A times its typical positive get no gradient.
    Paper defaults: stage 1 R=1.0, use_stB with A=1.05 (B=3.7 otherwise); stage 2 R=1.0, B=4.25.

    Args:
        pos, neg: (C,) positive / negative distances (with gradient).
        weight: (C,) per-sample weights (e.g. ``sdb_confidence_weight``) or a scalar.
    Returns:
        (loss, B used).
    """
    if B is None:
        B = float(2.0 * (neg.detach().median() + A * pos.detach().median()))
    nb = torch.clamp(neg, max=B / 2.0)
    per = weight * (R * pos**2 + nb**2 - B * nb)
    if reduction == "none":
        return per, B
    return per.mean(), B


def sdb_exp_teacher_loss(
    dist: torch.Tensor,
    labels: torch.Tensor,
    teacher_dist: torch.Tensor | None = None,
    R: float = 1.0,
    B: float | None = None,
    A: float = 1.05,
    threshold: float = -0.55,
    upper: float = 0.10,
    weight_fn: str = "quadratic",
    easy_width: float = 0.5,
    duplicate_eps: float = 0.008,
) -> tuple[torch.Tensor, dict]:
    """Stage 1 of difficulty balancing: ExpTeacher loss on a distance matrix [--loss=ExpTeacher].

    1. select each class's hardest positive / negative pair from the student distances
       (``sdb_hardest_pairs``): d_pos, d_neg;
    2. the teacher judges the same pairs: c = D^T[neg] - D^T[pos] (``teacher_dist``: e.g. the
       student's own eval-mode distances [--teacher=self], a pretrained or EMA network's
       [--teacher=path]; None = the student's detached ``dist``);
    3. w = ``sdb_confidence_weight(c, threshold, upper, weight_fn)``;
    4. loss = mean_k w_k (R d_pos^2 + b~^2 - B b~) (``sdb_exp_loss``), B = None -> ``--use_stB``.

    Paper stage-1 flags: R=1.0, A=1.05, --use_stB, --threshold=-0.55, --upper=0.10, --teacher=self.

    Args:
        dist: (N, N) student distances (with gradient), labels: (N,) class ids.
        teacher_dist: (N, N) teacher distances or None.
    Returns:
        (scalar loss, logs dict of floats: pos, neg, B, weight mean, fraction zero-weighted).
    """
    pi, pj, ni, nj, valid = sdb_hardest_pairs(dist, labels, duplicate_eps)
    pi, pj, ni, nj = pi[valid], pj[valid], ni[valid], nj[valid]
    if len(pi) == 0:
        raise ValueError("sdb_exp_teacher_loss: no class has both a positive and a negative")
    pos, neg = dist[pi, pj], dist[ni, nj]
    td = dist.detach() if teacher_dist is None else teacher_dist.detach()
    w = sdb_confidence_weight(td[ni, nj] - td[pi, pj], threshold, upper, weight_fn, easy_width)
    loss, B_used = sdb_exp_loss(pos, neg, w, R=R, B=B, A=A)
    logs = {
        "pos_dist": float(pos.detach().mean()),
        "neg_dist": float(neg.detach().mean()),
        "B": float(B_used),
        "w_mean": float(w.mean()),
        "w_zero": float((w == 0).float().mean()),
    }
    return loss, logs


def sdb_anneal_loss(
    dist: torch.Tensor,
    labels: torch.Tensor,
    threshold: float = -0.10,
    kind: str = "exp",
    R: float = 1.0,
    B: float = 4.25,
    margin: float = 1.0,
    duplicate_eps: float = 0.008,
) -> tuple[torch.Tensor, dict]:
    """Stage 2 (annealing) loss [--loss=tripletMargin++ --use_finetune].

    Same hardest pairs as stage 1; samples whose own margin d_neg - d_pos <= ``threshold`` are
    dropped (mask m = [d_neg - d_pos > threshold], the code's ``confident_weight`` in
    ``tripletMargin_generalized_Exponential``); the threshold rises by 0.05 per annealing cycle,
    so ever fewer of the hardest (likely noisy) samples are used.

    - ``kind='exp'`` (the code): L = mean m (R d_pos^2 + b~^2 - B b~), B fixed (4.25);
    - ``kind='triplet'``: L = mean m max(0, margin + d_pos - d_neg) (HardNet form).

    Returns:
        (scalar loss, logs: pos, neg, kept fraction).
    """
    pi, pj, ni, nj, valid = sdb_hardest_pairs(dist, labels, duplicate_eps)
    pi, pj, ni, nj = pi[valid], pj[valid], ni[valid], nj[valid]
    pos, neg = dist[pi, pj], dist[ni, nj]
    m = ((neg - pos).detach() > threshold).to(pos.dtype)
    if kind == "exp":
        loss, _ = sdb_exp_loss(pos, neg, m, R=R, B=B)
    elif kind == "triplet":
        loss = (m * torch.clamp(margin + pos - neg, min=0.0)).mean()
    else:
        raise ValueError(f"sdb_anneal_loss: kind must be 'exp' or 'triplet', got '{kind}'")
    return loss, {
        "pos_dist": float(pos.detach().mean()),
        "neg_dist": float(neg.detach().mean()),
        "kept": float(m.mean()),
    }
