"""HPatches benchmark protocols on patch descriptors: verification, matching, retrieval.

Restated from hpatches-benchmark ``python/utils/tasks.py`` / ``results.py`` (FORMATS.md
section 4); L2 distance on the unit descriptors, for each level L in e(asy), h(ard), t(ough);
the AP / AUC definitions are ``descriptors.metrics.hpatches_ap`` / ``hpatches_auc``:

- verification (:func:`eval_verification`): labels [0]*Nneg + [1]*Npos, scores = -[d_neg; d_pos];
  balanced = ROC AUC, imbalanced = PR AP on the first Npos + int(0.2 Npos) rows; intra and
  inter negatives separately;
- matching (:func:`eval_matching`): per sequence and k = 1..5, nearest neighbour of every ref
  descriptor among the ``Lk`` descriptors; AP = pr(-d_nn, nn == i, numpos=N);
- retrieval (:func:`eval_retrieval`): per query ref patch, pool = [5 distances to L1..L5 of the
  same idx] + distances to the distractor ref patches of other sequences (file order); AP at
  each pool size (:data:`POOL_SIZES`, clipped to the pool length), in closed form
  (:func:`retrieval_aps`).

:func:`describe_hpatches` describes the 65x65 patches (resized to the extractor's side with
``cv2.INTER_LINEAR``, as HardNet's HPatches extractor: ``descriptors.patches.patches_to_input``);
:func:`summarize` turns the raw fractions into the usual per-level percentage rows.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from scipy.spatial.distance import cdist
from tqdm import tqdm

from descriptors import metrics as M
from descriptors.data import hpatches as hp
from descriptors.data.synth import apply_homography
from descriptors.patches import patches_to_input

LEVEL_NAMES = {"e": "Easy", "h": "Hard", "t": "Tough"}
POOL_SIZES: tuple[int, ...] = (100, 500, 1000, 5000, 10000, 15000, 20000)


def homography_corner_error(
    p0: np.ndarray,
    p1: np.ndarray,
    H_gt: np.ndarray,
    shape0: tuple[int, int],
    ransac_px: float = 3.0,
    max_iters: int = 2000,
    confidence: float = 0.995,
) -> float:
    """Homography accuracy of matched points: mean distance (px) between image 0's four
    corners mapped by the RANSAC homography of ``p0`` -> ``p1`` ((M, 2) pixels each, OpenCV)
    and by ``H_gt`` (3, 3); ``shape0`` = (h, w) of image 0. inf when M < 4 or RANSAC fails."""
    if len(p0) < 4:
        return float("inf")
    H_est, _ = cv2.findHomography(
        p0, p1, cv2.RANSAC, ransac_px, maxIters=max_iters, confidence=confidence
    )
    if H_est is None:
        return float("inf")
    h, w = shape0
    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    return float(
        np.mean(np.linalg.norm(apply_homography(H_est, c) - apply_homography(H_gt, c), axis=1))
    )


def retrieval_aps(pos: np.ndarray, neg: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """``descriptors.metrics.hpatches_ap(scores[:k], labels[:k])`` (hpatches-benchmark
    ``metrics.pr``) for every pool size k, where scores =
    [pos..., neg...] with the P positives first (so they win stable-sort ties against
    negatives), in closed form: rank of the m-th best positive r_m = m + #(negatives in the
    pool scoring strictly higher); trapz over the PR curve then sums, per positive,
    ((m - 1) / (r_m - 1) + m / r_m) / 2 / P (the point before the first hit has precision
    1 at the origin and 1e-10 / (r - 1) otherwise, exactly as ``pr`` computes it).

    Args:
        pos: (P,) positive scores; neg: (M,) negative scores (finite); ks: pool sizes >= P.
    Returns:
        (len(ks),) AP.
    """
    p = len(pos)
    ks = np.asarray(ks, np.int64)
    if p == 0:
        return np.zeros(len(ks))
    pos_sorted = np.sort(np.asarray(pos, np.float64))[::-1]
    greater = np.asarray(neg, np.float64)[None, :] > pos_sorted[:, None]  # (P, M)
    cs = np.concatenate([np.zeros((p, 1), np.int64), np.cumsum(greater, 1)], 1)  # (P, M + 1)
    n_before = cs[:, np.clip(ks - p, 0, len(neg))]  # (P, K)
    m = np.arange(1, p + 1)[:, None]
    r = m + n_before
    prev = np.where(r > 1, np.maximum(m - 1, 1e-10) / np.maximum(r - 1, 1), 1.0)
    return ((prev + m / r) / 2.0).sum(0) / p


def describe_hpatches(
    data: dict[str, dict[str, np.ndarray]], extractor: Any, progress: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Describe every patch: {seq: {type: (N, 65, 65) uint8}} -> {seq: {type: (N, D) float32}}.

    ``extractor``: callable (B, 1, P, P) float32 in [0, 1] -> (B, D) with ``name`` and
    ``patch_size`` (a ``descriptors.registry`` Extractor).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for seq in tqdm(
        sorted(data),
        desc=f"describe {extractor.name}",
        disable=None if progress else True,
        leave=False,
    ):
        types = list(hp.TYPES)
        n = len(data[seq]["ref"])
        stack = np.concatenate([data[seq][t] for t in types])
        x = patches_to_input(stack, int(extractor.patch_size), cv2.INTER_LINEAR)
        d = np.asarray(extractor(x), np.float32)
        out[seq] = {t: d[i * n : (i + 1) * n] for i, t in enumerate(types)}
    return out


def _type_name(t: int, level: str) -> str:
    return "ref" if t == 0 else f"{level}{t}"


class _Index:
    """All descriptors of one level in one matrix; (seq, image id, idx) -> row."""

    def __init__(self, descr: dict[str, dict[str, np.ndarray]], level: str):
        self.seq_id = {s: i for i, s in enumerate(sorted(descr))}
        blocks, offs, o = [], np.zeros((len(self.seq_id), 6), np.int64), 0
        for s, si in self.seq_id.items():
            for t in range(6):
                a = descr[s][_type_name(t, level)]
                blocks.append(a)
                offs[si, t] = o
                o += len(a)
        self.mat = np.concatenate(blocks).astype(np.float32)
        self.offs = offs

    def rows(self, seqs: Sequence[str], ts: np.ndarray, idx: np.ndarray) -> np.ndarray:
        si = np.array([self.seq_id[s] for s in seqs], np.int64)
        return self.offs[si, np.asarray(ts, np.int64)] + np.asarray(idx, np.int64)


def _pair_dists(index: _Index, rows: list[tuple], chunk: int = 65536) -> np.ndarray:
    if not rows:
        return np.zeros(0)
    s1, t1, i1, s2, t2, i2 = zip(*rows)
    r1 = index.rows(s1, np.array(t1), np.array(i1))
    r2 = index.rows(s2, np.array(t2), np.array(i2))
    out = np.empty(len(rows))
    for i in range(0, len(rows), chunk):  # chunks keep 1e6-row files in memory bounds
        a = index.mat[r1[i : i + chunk]].astype(np.float64)
        out[i : i + chunk] = np.linalg.norm(a - index.mat[r2[i : i + chunk]], axis=1)
    return out


def eval_verification(
    descr: dict[str, dict[str, np.ndarray]], tasks: dict[str, list[tuple]]
) -> dict[str, dict[str, dict[str, float]]]:
    """-> {L: {"intra"|"inter": {"balanced_auc", "imbalanced_ap"}}} (fractions, not %)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for L in hp.LEVELS:
        index = _Index(descr, L)
        d_pos = _pair_dists(index, tasks["pos"])
        res = {}
        for neg in ("intra", "inter"):
            d_neg = _pair_dists(index, tasks[f"neg_{neg}"])
            labels = np.concatenate([np.zeros(len(d_neg)), np.ones(len(d_pos))])
            dist = np.concatenate([d_neg, d_pos])
            n_imb = len(d_pos) + int(len(d_pos) * 0.2)
            res[neg] = {
                "balanced_auc": float(M.hpatches_auc(-dist, labels)),
                "imbalanced_ap": float(M.hpatches_ap(-dist[:n_imb], labels[:n_imb])),
            }
        out[L] = res
    return out


def eval_matching(
    descr: dict[str, dict[str, np.ndarray]], seqs: Iterable[str]
) -> dict[str, dict[str, list[float]]]:
    """-> {seq: {L: [AP for k = 1..5]}} (fractions)."""
    out: dict[str, dict[str, list[float]]] = {}
    for seq in seqs:
        ref = descr[seq]["ref"].astype(np.float64)
        gt = np.arange(len(ref))
        out[seq] = {}
        for L in hp.LEVELS:
            aps = []
            for k in range(1, 6):
                d = descr[seq][f"{L}{k}"].astype(np.float64)
                D = _cdist(ref, d)
                nn = np.argmin(D, axis=1)
                aps.append(
                    float(M.hpatches_ap(-D[gt, nn], (nn == gt).astype(np.int64), numpos=len(gt)))
                )
            out[seq][L] = aps
    return out


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (Na, Nb), float64 (scipy cdist, as the benchmark's CPU path)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return cdist(a, b, "euclidean")


def pool_sizes_for(n_pool: int, sizes: Sequence[int] = POOL_SIZES) -> list[int]:
    """Benchmark pool sizes clipped to the available pool length, de-duplicated."""
    return sorted({min(int(k), int(n_pool)) for k in sizes})


def eval_retrieval(
    descr: dict[str, dict[str, np.ndarray]],
    queries: list[tuple],
    distractors: list[tuple],
    pool_sizes: Sequence[int] = POOL_SIZES,
    chunk: int = 1024,
) -> dict[str, Any]:
    """-> {"pool_sizes": [...], "map": {L: {k: mAP}}} (fractions); pool sizes clipped to the
    smallest pool over queries (5 positives + distractors of other sequences)."""
    if not queries:
        raise hp.HPatchesError("retrieval: no queries")
    q_seq = [s for s, _ in queries]
    d_seq = np.array([s for s, _ in distractors], dtype=object)
    q = np.stack([descr[s]["ref"][i] for s, i in queries]).astype(np.float64)
    dd = (
        np.stack([descr[s]["ref"][i] for s, i in distractors]).astype(np.float64)
        if distractors
        else np.zeros((0, q.shape[1]))
    )
    masks = {s: d_seq != s for s in set(q_seq)}
    n_pool = min(5 + int(m.sum()) for m in masks.values())
    ks = pool_sizes_for(n_pool, pool_sizes)
    aps = {L: np.zeros((len(queries), len(ks))) for L in hp.LEVELS}
    for c0 in range(0, len(queries), chunk):
        D = _cdist(q[c0 : c0 + chunk], dd)  # (chunk, Nd), bounded memory
        for qi in range(c0, min(c0 + chunk, len(queries))):
            s, idx = queries[qi]
            neg = -D[qi - c0, masks[s]]  # distractors of other seqs, in order
            for L in hp.LEVELS:
                pos = -np.linalg.norm(
                    q[qi] - np.stack([descr[s][f"{L}{k}"][idx] for k in range(1, 6)]), axis=1
                )
                aps[L][qi] = retrieval_aps(pos, neg, ks)
    res = {L: {int(k): float(aps[L][:, j].mean()) for j, k in enumerate(ks)} for L in hp.LEVELS}
    return {"pool_sizes": ks, "map": res}


def summarize(verif: dict | None, match: dict | None, retr: dict | None) -> dict[str, dict]:
    """Per-task {L: %, "mean": %} rows of the usual table (+ breakdowns)."""
    out: dict[str, dict] = {}
    if verif is not None:
        for key, name in (("imbalanced_ap", "verification"), ("balanced_auc", "verification_auc")):
            row = {
                L: 100 * float(np.mean([verif[L][n][key] for n in ("intra", "inter")]))
                for L in hp.LEVELS
            }
            row.update(
                {f"{L}_{n}": 100 * verif[L][n][key] for L in hp.LEVELS for n in ("intra", "inter")}
            )
            row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
            out[name] = row
    if match is not None:
        row = {L: 100 * float(np.mean([match[s][L] for s in match])) for L in hp.LEVELS}
        for pre in ("i", "v"):
            ss = [s for s in match if s.startswith(pre + "_")]
            for L in hp.LEVELS:
                row[f"{L}_{pre}"] = 100 * float(np.mean([match[s][L] for s in ss])) if ss else None
        row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
        out["matching"] = row
    if retr is not None:
        ks = [int(k) for k in retr["pool_sizes"]]
        mp = {L: {int(k): v for k, v in retr["map"][L].items()} for L in hp.LEVELS}

        def level_row(vals: dict[str, float]) -> dict:
            row = {L: 100 * float(vals[L]) for L in hp.LEVELS}
            row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
            return row

        by_pool = {str(k): level_row({L: mp[L][k] for L in hp.LEVELS}) for k in ks}
        head = dict(by_pool[str(max(ks))], pool_size=max(ks))  # the full (largest) pool
        out["retrieval"] = head
        out["retrieval_by_pool"] = by_pool
        out["retrieval_pool_mean"] = dict(
            level_row({L: float(np.mean([mp[L][k] for k in ks])) for L in hp.LEVELS}), pool_sizes=ks
        )
    return out
