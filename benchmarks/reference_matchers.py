"""The FAISS matchers of the first versions, kept as references for tests and benchmarks.

``match_reference`` = FAISS top-2 in both directions + :func:`decide` (the documented rule of
``localize.nearest_neighbor`` written on numpy top-2 arrays). ``knn=knn2`` (default) is the
first version (a fresh ``IndexFlatIP`` per direction and pair); ``knn=knn2_bruteforce`` is FAISS
brute force without an index (``faiss.knn``). The product matcher is
``localize.nearest_neighbor`` (torch); these are not used by the pipeline.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import faiss
import numpy as np

from localize import nn
from localize.nearest_neighbor import as_2d


def _normalise_knn(s: np.ndarray, i: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS (nq, k<=2) results -> (nq, 2) sims (``-inf`` where missing) and idx (-1 there)."""
    sims = np.full((nq, 2), -np.inf, np.float32)
    idx = np.full((nq, 2), -1, np.int64)
    k = i.shape[1]
    sims[:, :k] = s
    idx[:, :k] = i
    sims[idx < 0] = -np.inf  # FAISS marks missing results with -1 and -FLT_MAX-like values
    return sims, idx


def _knn_inputs(queries: np.ndarray, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float32 (Nq, D) / (Nb, D); ValueError when both are non-empty and D differs."""
    q = np.ascontiguousarray(queries, np.float32)
    b = np.ascontiguousarray(database, np.float32)
    if len(q) and len(b) and q.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor dims differ: {q.shape[1]} vs {b.shape[1]}")
    return q, b


def knn2(
    queries: np.ndarray, database: np.ndarray, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-2 inner-product neighbours with a fresh FAISS ``IndexFlatIP`` (the reference).

    Args:
        queries: (Nq, D) float32; database: (Nb, D) float32.
        device: torch device for FAISS (``localize.nn.want_gpu``; None = GPU iff available).
    Returns:
        sims (Nq, 2) float32 (``-inf`` where there is no neighbour), idx (Nq, 2) int64 (-1 there).
    """
    q, b = _knn_inputs(queries, database)
    if len(q) == 0 or len(b) == 0:
        return _normalise_knn(
            np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), len(q)
        )
    index = faiss.IndexFlatIP(b.shape[1])
    if nn.want_gpu(device):
        index = nn.index_to_gpu(index)
    index.add(b)
    s, i = index.search(q, min(2, len(b)))
    return _normalise_knn(s, i, len(q))


def knn2_bruteforce(
    queries: np.ndarray, database: np.ndarray, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`knn2` with FAISS brute force and no index (``faiss.knn`` / ``faiss.knn_gpu``)."""
    q, b = _knn_inputs(queries, database)
    if len(q) == 0 or len(b) == 0:
        return _normalise_knn(
            np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), len(q)
        )
    k = min(2, len(b))
    if nn.want_gpu(device):
        s, i = faiss.knn_gpu(nn.gpu_resources(), q, b, k, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        s, i = faiss.knn(q, b, k, metric=faiss.METRIC_INNER_PRODUCT)
    return _normalise_knn(s, i, len(q))


def _one_way(
    sims: np.ndarray, idx: np.ndarray, ratio: float | None, distance_threshold: float | None
) -> np.ndarray:
    """(N, 2) top-2 sims/idx -> (N,) int64 nearest index passing the tests, -1 otherwise."""
    n = len(idx)
    if n == 0:
        return np.zeros((0,), np.int64)
    d1 = np.maximum(2.0 - 2.0 * sims[:, 0].astype(np.float64), 0.0)
    d2 = np.where(
        idx[:, 1] >= 0, np.maximum(2.0 - 2.0 * sims[:, 1].astype(np.float64), 0.0), np.inf
    )
    ok = idx[:, 0] >= 0
    # an exact tie between the two nearest neighbours is ambiguous in every mode
    ok &= ~((idx[:, 1] >= 0) & (sims[:, 0] == sims[:, 1]))
    if ratio is not None:
        ok &= d1 < (ratio**2) * d2
    if distance_threshold is not None:
        ok &= d1 <= distance_threshold**2
    return np.where(ok, idx[:, 0], -1)


def decide(
    sims01: np.ndarray,
    idx01: np.ndarray,
    sims10: np.ndarray | None,
    idx10: np.ndarray | None,
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Match decision from top-2 neighbours in both directions (the reference rule).

    Args:
        sims01, idx01: (N0, 2) top-2 similarities / indices into d1 (-inf / -1 = missing);
        sims10, idx10: (N1, 2) the same from d1 into d0 (needed when ``mutual``).
    Returns:
        matches0 (N0,) int32 (-1 = none), scores0 (N0,) float32 in [0, 1].
    """
    m0 = _one_way(sims01, idx01, ratio, distance_threshold)
    if mutual and len(m0):
        m1 = _one_way(sims10, idx10, ratio, distance_threshold)
        valid = m0 >= 0
        back = np.full(len(m0), -2, np.int64)
        back[valid] = m1[m0[valid]]
        m0 = np.where(valid & (back == np.arange(len(m0))), m0, -1)
    scores = (
        np.where(m0 >= 0, (sims01[:, 0].astype(np.float32) + 1.0) / 2.0, 0.0)
        if len(m0)
        else np.zeros((0,), np.float32)
    )
    return m0.astype(np.int32), np.asarray(scores, np.float32)


def match_reference(
    d0: np.ndarray,
    d1: np.ndarray,
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
    device: str | None = "cpu",
    knn: Callable = knn2,
) -> tuple[np.ndarray, np.ndarray]:
    """The previous matcher: FAISS top-2 in both directions (``knn``) + :func:`decide`."""
    d0, d1 = as_2d(d0), as_2d(d1)
    if len(d0) == 0 or len(d1) == 0:
        return np.full(len(d0), -1, np.int32), np.zeros(len(d0), np.float32)
    s01, i01 = knn(d0, d1, device)
    s10, i10 = knn(d1, d0, device) if mutual else (None, None)
    return decide(s01, i01, s10, i10, ratio, distance_threshold, mutual)


#: name -> top-2 search of :func:`match_reference`
KNN = {"faiss-index": knn2, "faiss": knn2_bruteforce}


def match_image_reference(
    d0: Any,
    partners: Sequence[Any],
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
    backend: str = "faiss-index",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`match_reference` per partner, on the CPU (``backend``: a key of :data:`KNN`)."""
    return [
        match_reference(d0, p, ratio, distance_threshold, mutual, "cpu", KNN[backend])
        for p in partners
    ]
