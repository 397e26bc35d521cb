"""Image retrieval from local descriptors: VLAD / ASMK over a learned vocabulary, FAISS search,
spatial re-ranking and query expansion.

The vocabulary (``.npz``) is learned on a separate image set and aggregation is
:mod:`localize.vlad`'s. :func:`main` writes hloc's ``global-feats.h5`` (``global_descriptor
(Dg,)`` float32, float16 with ``as_half``, and ``image_size (2,)``) that
``localize.pairs_from_retrieval`` reads. :func:`search` is exact inner product (``IndexFlatIP``)
or ``IndexIVFFlat``, in query chunks so only (chunk, k) results are held.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cv2
import faiss
import numpy as np
import torch
from tqdm import tqdm

from localize import io, nn
from localize.cli import ArgumentParser, output_file, positive_int, run_cli
from localize.io import read_descriptors, write_global_descriptors
from localize.nearest_neighbor import match_descriptors
from localize.vlad import (
    Assigner,
    Vocabulary,
    asmk_aggregate,
    load_vocabulary,
    sample_descriptors,
    save_vocabulary,
    train_pca,
    train_vocabulary,
    vlad,
)

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "method": "vlad",  # 'vlad' | 'asmk'
    "num_words": 64,  # vocabulary size k
    "kmeans_iters": 20,
    "max_train_descriptors": 200_000,  # k-means training sample (uniform over images)
    "multiple_assignment": 1,  # m nearest words per descriptor
    "ma_sigma": None,  # soft-assignment bandwidth (None = equal weights)
    "intra_norm": True,
    "power": 0.5,  # signed power normalisation (1.0 = off)
    "pca_dim": None,  # optional PCA of the VLAD (learned on the vocabulary set)
    "pca_whiten": False,
    # ASMK
    "asmk_alpha": 3.0,
    "asmk_tau": 0.0,
    "asmk_binary": False,
    "asmk_query_ma": 1,  # multiple assignment on the query side only
}

confs: dict[str, dict[str, Any]] = {
    "vlad-k64": {**default_conf, "output": "global-feats-vlad-k64"},
    "vlad-k64-ma3": {
        **default_conf,
        "multiple_assignment": 3,
        "output": "global-feats-vlad-k64-ma3",
    },
    "vlad-k256": {**default_conf, "num_words": 256, "output": "global-feats-vlad-k256"},
    "asmk-k256": {**default_conf, "method": "asmk", "num_words": 256, "output": "asmk-k256"},
    "asmk-k1024": {**default_conf, "method": "asmk", "num_words": 1024, "output": "asmk-k1024"},
}

search_default_conf: dict[str, Any] = {
    "index": "flat",  # 'flat' (exact IndexFlatIP) | 'ivf' (IndexIVFFlat, inner product)
    "nlist": None,  # IVF cells (None: ~4 sqrt(N))
    "nprobe": 16,
    "chunk": 1024,  # queries per FAISS call
}


def resolve_conf(conf: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Conf name or dict -> full conf (default_conf filled in)."""
    if conf is None:
        conf = "vlad-k64"
    if isinstance(conf, str):
        if conf not in confs:
            raise ValueError(f"unknown retrieval conf '{conf}': choose from {', '.join(confs)}")
        conf = confs[conf]
    c = {**default_conf, **dict(conf)}
    if c["method"] not in ("vlad", "asmk"):
        raise ValueError(f"unknown global method {c['method']!r} (vlad or asmk)")
    return c


def encode(
    descs: Sequence[np.ndarray],
    vocab: Vocabulary | np.ndarray | str | Path,
    conf: Mapping[str, Any] | str | None = None,
    desc_label: str = "encode",
    query: bool = False,
) -> list:
    """Encode many images: VLAD vectors (list of (Dg,)) or ASMK (words, vecs) tuples."""
    conf = resolve_conf(conf)
    vocab = load_vocabulary(vocab)
    assigner = Assigner(vocab.centroids)
    out = []
    with nn.single_thread():
        for d in tqdm(descs, desc=desc_label, unit="img", leave=False, disable=None):
            if conf["method"] == "vlad":
                out.append(
                    vlad(
                        d,
                        vocab,
                        conf["multiple_assignment"],
                        conf["ma_sigma"],
                        conf["intra_norm"],
                        conf["power"],
                        assigner,
                    )
                )
            else:
                ma = conf["asmk_query_ma"] if query else 1
                out.append(asmk_aggregate(d, vocab, ma, conf["asmk_binary"], assigner))
    return out


def learn_vocabulary_from_features(
    features_path: str | Path,
    conf: Mapping[str, Any] | str | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
    out_path: str | Path | None = None,
) -> Vocabulary:
    """k-means (+ optional PCA) on the local descriptors of a SEPARATE image set.

    Args:
        features_path: features file of the vocabulary images (not the database!).
        conf: retrieval conf (``num_words``, ``kmeans_iters``, ``max_train_descriptors``,
            ``pca_dim``...).
        out_path: if given, the vocabulary is saved there (``.npz``).
    """
    conf = resolve_conf(conf)
    _, descs, _ = read_descriptors(features_path, names)
    sample = sample_descriptors(descs, conf["max_train_descriptors"], seed)
    k = int(conf["num_words"])
    logger.info(
        "learning %d words on %d descriptors (D=%d) from %s",
        k,
        len(sample),
        sample.shape[1],
        features_path,
    )
    vocab = Vocabulary(
        centroids=train_vocabulary(sample, k, seed, conf["kmeans_iters"]),
        conf={k_: v for k_, v in conf.items()},
    )
    if conf["method"] == "vlad" and conf.get("pca_dim"):
        vecs = np.stack(encode(descs, vocab.centroids, {**conf, "pca_dim": None}, "vlad (pca)"))
        vecs = vecs[np.linalg.norm(vecs, axis=1) > 0]
        vocab.pca_mean, vocab.pca_components = train_pca(vecs, conf["pca_dim"], conf["pca_whiten"])
    if out_path is not None:
        save_vocabulary(out_path, vocab, vocab.conf)
    return vocab


def global_descriptors(
    features_path: str | Path,
    vocab: Vocabulary | np.ndarray | str | Path,
    names: Sequence[str] | None = None,
    conf: Mapping[str, Any] | str | None = None,
) -> dict[str, np.ndarray]:
    """VLAD global descriptor of every image of a features file.

    Returns:
        {name: (Dg,) float32 unit vector} in the order of ``names`` (default: all images).
    """
    conf = resolve_conf(conf)
    if conf["method"] != "vlad":
        raise ValueError(
            "global_descriptors builds single vectors (method 'vlad'); use "
            "encode()/AsmkIndex for ASMK"
        )
    names, descs, _ = read_descriptors(features_path, names)
    vecs = encode(descs, vocab, conf, "vlad")
    return dict(zip(names, vecs))


def main(
    features_path: str | Path,
    vocab_path: str | Path,
    out_path: str | Path,
    names: Sequence[str] | None = None,
    conf: Mapping[str, Any] | str | None = None,
    as_half: bool = False,
    nonnegative: bool = False,
) -> Path:
    """Global descriptors of the images of ``features_path`` -> ``out_path`` (hloc layout,
    readable by ``localize.pairs_from_retrieval.from_retrieval``). ``vocab_path``: ``.npz``/``.npy`` from
    :func:`save_vocabulary` / :func:`learn_vocabulary_from_features`.

    ``nonnegative``: store each (Dg,) unit VLAD ``v`` as the unit (Dg + 1,) ``[v, 1] / sqrt(2)``,
    whose inner products are ``(1 + v.w) / 2`` in [0, 1] (same ranking): with a vocabulary learned
    on the collection itself about half of the similarities are negative, and hloc's
    ``pairs_from_retrieval`` drops negative scores."""
    conf = resolve_conf(conf)
    vocab = load_vocabulary(vocab_path)
    names, descs, sizes = read_descriptors(features_path, names)
    vecs = encode(descs, vocab, conf, "vlad")
    if nonnegative:
        vecs = [np.append(v, 1.0).astype(np.float32) / np.sqrt(2.0) for v in vecs]
    logger.info(
        "global descriptors (VLAD k=%d, dim %d) for %d images -> %s",
        vocab.k,
        len(vecs[0]) if vecs else 0,
        len(names),
        out_path,
    )
    return write_global_descriptors(out_path, dict(zip(names, vecs)), sizes, as_half)


# ------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------
def build_index(
    db: np.ndarray,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> Any:
    """FAISS inner-product index over (N, D) database vectors.

    ``index='flat'``: exact ``IndexFlatIP``. ``index='ivf'``: ``IndexIVFFlat`` with ``nlist``
    cells (default ~4 sqrt(N), at most N/39 so every cell gets training points) trained on the
    database itself, ``nprobe`` cells visited per query (approximate).
    """
    x = np.ascontiguousarray(db, np.float32)
    if x.ndim != 2:
        raise ValueError(f"database must be (N, D), got shape {x.shape}")
    D = x.shape[1]
    if index == "flat":
        idx = faiss.IndexFlatIP(D)
    elif index == "ivf":
        if nlist is None:
            nlist = int(max(1, min(4 * np.sqrt(len(x)), len(x) // 39)))
        quant = faiss.IndexFlatIP(D)
        idx = faiss.IndexIVFFlat(quant, D, int(nlist), faiss.METRIC_INNER_PRODUCT)
        idx.cp.seed = int(seed)
        idx.train(x)
        idx.nprobe = int(min(nprobe, nlist))
    else:
        raise ValueError(f"unknown index type {index!r} (flat or ivf)")
    if nn.want_gpu(device):
        idx = nn.index_to_gpu(idx)
    idx.add(x)
    return idx


def search_index(
    index: Any, queries: np.ndarray, k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query in chunks of ``chunk`` rows.

    Returns:
        scores (Q, k) float32 (``-inf`` where fewer than k results), idx (Q, k) int64 (-1 there).
    """
    q = np.ascontiguousarray(queries, np.float32)
    n = int(index.ntotal)
    k = int(min(k, n))
    Q = len(q)
    scores = np.full((Q, k), -np.inf, np.float32)
    idx = np.full((Q, k), -1, np.int64)
    if Q == 0 or k == 0:
        return scores, idx
    chunk = max(1, int(chunk))
    for s in range(0, Q, chunk):
        sc, ii = index.search(q[s : s + chunk], k)
        scores[s : s + chunk], idx[s : s + chunk] = sc, ii
    scores[idx < 0] = -np.inf
    return scores, idx


def search(
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk: int = 1024,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product top-k: db (N, D), queries (Q, D) -> scores (Q, k'), idx (Q, k'),
    k' = min(k, N), best first. Queries are processed ``chunk`` at a time: memory is
    O(chunk * N) inside FAISS, never N x N."""
    ix = build_index(db, index, nlist, nprobe, device)
    return search_index(ix, queries, k, chunk)


def ranks_from_topk(idx: np.ndarray, n_db: int) -> np.ndarray:
    """(Q, k) top-k indices -> (n_db, Q) full revisitop ranks: the top-k first, then the rest
    of the database in index order (ties at the bottom of the list)."""
    idx = np.asarray(idx, np.int64)
    Q = len(idx)
    out = np.empty((n_db, Q), np.int64)
    for q in range(Q):
        top = idx[q][idx[q] >= 0]
        seen = np.zeros(n_db, bool)
        seen[top] = True
        out[:, q] = np.concatenate([top, np.nonzero(~seen)[0]])
    return out


class AsmkIndex:
    """Inverted file over ASMK aggregated residuals; chunked, sparse-by-word scoring.

    Args:
        db: list of (words (n_i,), vecs (n_i, D)) from :func:`asmk_aggregate`.
        alpha, tau: selectivity ``sigma(u) = sign(u)|u|^alpha`` if ``u > tau`` else 0.
    """

    def __init__(
        self, db: Sequence[tuple[np.ndarray, np.ndarray]], alpha: float = 3.0, tau: float = 0.0
    ):
        self.alpha, self.tau = float(alpha), float(tau)
        self.n = len(db)
        words = np.concatenate([w for w, _ in db]) if db else np.zeros(0, np.int64)
        vecs = np.concatenate([v for _, v in db]) if db else np.zeros((0, 1), np.float32)
        imgs = (
            np.concatenate([np.full(len(w), i, np.int64) for i, (w, _) in enumerate(db)])
            if db
            else np.zeros(0, np.int64)
        )
        order = np.argsort(words, kind="stable")
        self.words, self.vecs, self.imgs = words[order], vecs[order], imgs[order]
        self.nwords = np.array([len(w) for w, _ in db], np.float64)
        self.norm = 1.0 / np.sqrt(np.maximum(self.nwords, 1))

    def _sigma(self, u: np.ndarray) -> np.ndarray:
        return np.where(u > self.tau, np.sign(u) * np.abs(u) ** self.alpha, 0.0)

    def scores(self, q: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """(n_db,) similarity of one query."""
        s = np.zeros(self.n, np.float64)
        qw, qv = q
        if len(qw) == 0 or len(self.words) == 0:
            return s
        lo = np.searchsorted(self.words, qw, "left")
        hi = np.searchsorted(self.words, qw, "right")
        for j in range(len(qw)):
            if hi[j] > lo[j]:
                u = self.vecs[lo[j] : hi[j]] @ qv[j]
                np.add.at(s, self.imgs[lo[j] : hi[j]], self._sigma(u))
        return s * self.norm / np.sqrt(max(len(np.unique(qw)), 1))

    def search(
        self, queries: Sequence[tuple[np.ndarray, np.ndarray]], k: int, chunk: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query (only a (chunk, n_db) score block is held at a time)."""
        k = int(min(k, self.n))
        Q = len(queries)
        scores = np.full((Q, k), -np.inf, np.float32)
        idx = np.full((Q, k), -1, np.int64)
        for s0 in range(0, Q, chunk):
            block = np.stack([self.scores(q) for q in queries[s0 : s0 + chunk]])
            part = (
                np.argpartition(-block, k - 1, axis=1)[:, :k]
                if k < self.n
                else np.tile(np.arange(self.n), (len(block), 1))
            )
            ps = np.take_along_axis(block, part, 1)
            o = np.argsort(-ps, axis=1, kind="stable")
            idx[s0 : s0 + chunk] = np.take_along_axis(part, o, 1)
            scores[s0 : s0 + chunk] = np.take_along_axis(ps, o, 1)
        return scores, idx


# ------------------------------------------------------------------------------------------
# Query expansion and spatial re-ranking
# ------------------------------------------------------------------------------------------
def query_expansion(
    db: np.ndarray,
    queries: np.ndarray,
    idx: np.ndarray,
    scores: np.ndarray,
    n: int = 5,
    alpha: float = 0.0,
) -> np.ndarray:
    """Average (alpha=0, AQE) or alpha-weighted (alpha-QE, weights ``max(score, 0)^alpha``)
    query expansion over the top-``n`` results; the query itself has weight 1.

    Returns:
        (Q, D) float32 expanded, L2-normalised queries (search again with them).
    """
    db = np.asarray(db, np.float32)
    q = np.asarray(queries, np.float32).copy()
    n = int(min(n, idx.shape[1]))
    for i in range(len(q)):
        top = idx[i, :n]
        ok = top >= 0
        top = top[ok]
        if len(top) == 0:
            continue
        w = (
            np.ones(len(top), np.float32)
            if alpha == 0
            else np.maximum(scores[i, :n][ok], 0.0).astype(np.float32) ** alpha
        )
        q[i] = q[i] + (w[:, None] * db[top]).sum(0)
    nrm = np.linalg.norm(q, axis=1, keepdims=True)
    return (q / np.maximum(nrm, 1e-12)).astype(np.float32)


RERANK_DEFAULTS: dict[str, Any] = {
    "top": 50,  # candidates re-ordered per query
    "model": "homography",  # 'homography' | 'fundamental'
    "ransac_threshold": 8.0,  # px (at the keypoints' resolution)
    "min_matches": 8,
    "min_inliers": 12,  # verified if inliers >= this
    "ratio": 0.8,
    "distance_threshold": None,
    "mutual": True,
    "confidence": 0.999,
    "max_iters": 2000,
}


def count_inliers(
    kp0: np.ndarray,
    kp1: np.ndarray,
    matches0: np.ndarray,
    model: str = "homography",
    threshold: float = 8.0,
    min_matches: int = 8,
    confidence: float = 0.999,
    max_iters: int = 2000,
    seed: int = 0,
) -> int:
    """RANSAC inlier count of matched keypoints (cv2 homography or fundamental matrix)."""
    m = np.nonzero(np.asarray(matches0) >= 0)[0]
    if len(m) < max(min_matches, 8 if model == "fundamental" else 4):
        return 0
    p0 = np.ascontiguousarray(kp0[m], np.float32)
    p1 = np.ascontiguousarray(kp1[matches0[m]], np.float32)
    cv2.setRNGSeed(int(seed))
    if model == "homography":
        H, mask = cv2.findHomography(
            p0, p1, cv2.RANSAC, threshold, maxIters=max_iters, confidence=confidence
        )
    elif model == "fundamental":
        H, mask = cv2.findFundamentalMat(p0, p1, cv2.FM_RANSAC, threshold, confidence, max_iters)
    else:
        raise ValueError(f"unknown verification model {model!r} (homography or fundamental)")
    if H is None or mask is None:
        return 0
    return int(mask.reshape(-1).astype(bool).sum())


def spatial_rerank(
    query_feats: Sequence[tuple[np.ndarray, np.ndarray]],
    db_feats: Callable[[int], tuple[np.ndarray, np.ndarray]],
    idx: np.ndarray,
    scores: np.ndarray,
    conf: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-order the top ``conf['top']`` of each ranking by RANSAC inliers.

    Args:
        query_feats: per query (keypoints (N, 2), descriptors (N, D)).
        db_feats: function db index -> (keypoints, descriptors) (lets callers cache / read lazily).
        idx, scores: (Q, k) search results, best first.
    Returns:
        new idx (Q, k), new scores (Q, k) (verified candidates first, by inliers then global
        score; unverified ones keep their global order after them; positions beyond ``top``
        untouched), inliers (Q, top) int (aligned with the new order).
    """
    c = {**RERANK_DEFAULTS, **(dict(conf) if conf else {})}
    idx = np.asarray(idx).copy()
    scores = np.asarray(scores).copy()
    top = int(min(c["top"], idx.shape[1]))
    all_inl = np.zeros((len(idx), top), np.int64)
    with nn.single_thread(), _cv2_single_thread():
        for qi in tqdm(
            range(len(idx)), desc="spatial re-rank", unit="query", leave=False, disable=None
        ):
            kq, dq = query_feats[qi]
            inl = np.zeros(top, np.int64)
            for r in range(top):
                j = int(idx[qi, r])
                if j < 0:
                    continue
                kd, dd = db_feats(j)
                m0, _ = match_descriptors(dq, dd, c["ratio"], c["distance_threshold"], c["mutual"])
                inl[r] = count_inliers(
                    kq,
                    kd,
                    m0,
                    c["model"],
                    c["ransac_threshold"],
                    c["min_matches"],
                    c["confidence"],
                    c["max_iters"],
                )
            key = np.where(inl >= c["min_inliers"], inl, -1)
            order = np.lexsort((np.arange(top), -scores[qi, :top], -key))
            idx[qi, :top] = idx[qi, :top][order]
            scores[qi, :top] = scores[qi, :top][order]
            all_inl[qi] = inl[order]
    return idx, scores, all_inl


class _cv2_single_thread:
    """Context: OpenCV's thread pool limited to one thread (tiny RANSAC problems)."""

    def __enter__(self) -> None:
        self.n = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc: Any) -> None:
        cv2.setNumThreads(self.n)


class FeatureCache:
    """``db index -> (keypoints (N, 2), descriptors (N, D))`` over a features file, for
    :func:`spatial_rerank` (reads and caches through ``io.FeatureReader``)."""

    def __init__(self, features_path: str | Path, names: Sequence[str], size: int = 256):
        self.names = list(names)
        self.reader = io.FeatureReader(features_path, cache_size=2 * size)

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.names[i]
        return self.reader.keypoints(n), self.reader.descriptors(n)


# ------------------------------------------------------------------------------------------
# CLI: global descriptors for an hloc features file
# ------------------------------------------------------------------------------------------
def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        description="VLAD global descriptors (hloc layout) from local "
        "features, with a vocabulary learned on a separate image set."
    )
    p.add_argument("--features", type=Path, required=True, help="features.h5 to encode")
    p.add_argument("--output", type=output_file, required=True, help="global-feats .h5 to write")
    p.add_argument(
        "--vocab",
        type=Path,
        required=True,
        help="vocabulary .npz/.npy; learned from --vocab_features if missing",
    )
    p.add_argument(
        "--vocab_features",
        type=Path,
        help="features.h5 of a SEPARATE image set to learn the vocabulary on",
    )
    p.add_argument(
        "--conf",
        default="vlad-k64",
        choices=[k for k, v in confs.items() if v["method"] == "vlad"],
        help="global descriptor conf",
    )
    p.add_argument("--num_words", type=positive_int, help="vocabulary size (overrides the conf)")
    p.add_argument("--as_half", action="store_true", help="store global descriptors as float16")
    return p.parse_args(None if argv is None else list(argv))


def cli(argv: Iterable[str] | None = None) -> Path:
    """Command line; known errors exit 2 with one line."""
    args = _parse_args(argv)
    return run_cli("localize.retrieve", _run_cli, args)


def _run_cli(args: argparse.Namespace) -> Path:
    conf = resolve_conf(args.conf)
    if args.num_words:
        conf["num_words"] = args.num_words
    if not args.vocab.exists():
        if args.vocab_features is None:
            raise FileNotFoundError(
                f"{args.vocab}: vocabulary not found; pass --vocab_features to learn it"
            )
        learn_vocabulary_from_features(args.vocab_features, conf, out_path=args.vocab)
    return main(args.features, args.vocab, args.output, conf=conf, as_half=args.as_half)


if __name__ == "__main__":
    cli()
