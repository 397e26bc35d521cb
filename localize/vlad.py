"""Visual vocabularies and per-image aggregation of local descriptors: VLAD and ASMK.

- vocabulary: ``k`` centroids learned with ``faiss.Kmeans`` on local descriptors of a SEPARATE
  image set (:func:`train_vocabulary`; never the database being searched), stored as ``.npz``
  with ``centroids (k, D) float32`` (+ ``pca_mean``, ``pca_components`` when PCA is learned,
  + ``conf`` as a JSON string); a bare ``.npy`` (k, D) is also accepted;
- :func:`vlad` (one image, (N, D) -> (k * D,)): multiple assignment to the ``m`` nearest words
  with weights ``exp(-(d_j^2 - d_1^2) / (2 ma_sigma^2))`` normalised over the m words
  (``ma_sigma=None``: 1/m), weighted residuals ``x - c_w`` summed per word, ``intra_norm``
  (Arandjelovic & Zisserman 2013), signed power ``|v|^power``, global L2, optional PCA then L2;
  zero vector for an image without descriptors;
- :func:`asmk_aggregate` (Tolias et al. 2013): per word, the L2-normalised sum of residuals
  (binarised with ``binary``, ASMK*).

``localize.retrieve`` builds the retrieval stage (confs, files, search) on these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import faiss
import numpy as np
import torch

from descriptors.util import atomic_write
from localize import nn


# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------
def sample_descriptors(descs: Sequence[np.ndarray], max_total: int, seed: int = 0) -> np.ndarray:
    """Uniform-per-image random sample of at most ``max_total`` rows, (M, D) float32."""
    rng = np.random.default_rng(seed)
    nonempty = [d for d in descs if len(d)]
    if not nonempty:
        raise ValueError("no descriptors to sample from (every image is empty)")
    per = max(1, int(max_total) // len(nonempty))
    out = [d[rng.choice(len(d), min(per, len(d)), replace=False)] for d in nonempty]
    return np.ascontiguousarray(np.concatenate(out, 0), np.float32)


def train_vocabulary(
    descs: np.ndarray,
    k: int,
    seed: int = 0,
    niter: int = 20,
    device: str | torch.device | None = None,
    nredo: int = 1,
) -> np.ndarray:
    """k-means vocabulary with ``faiss.Kmeans``.

    Args:
        descs: (N, D) float descriptors (N >= k) of a separate training image set.
        k: number of visual words.
        seed: k-means seed (deterministic for a given input on CPU).
        nredo: k-means restarts (the lowest-error one is kept).
    Returns:
        (k, D) float32 centroids.
    """
    x = np.ascontiguousarray(descs, np.float32)
    if x.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got shape {x.shape}")
    if len(x) < k:
        raise ValueError(f"need at least k={k} descriptors to learn a vocabulary, got {len(x)}")
    km = faiss.Kmeans(
        x.shape[1],
        int(k),
        niter=int(niter),
        seed=int(seed),
        verbose=False,
        gpu=nn.want_gpu(device),
        nredo=int(nredo),
        max_points_per_centroid=max(256, len(x) // k + 1),
    )
    km.train(x)
    return np.ascontiguousarray(km.centroids, np.float32).reshape(k, x.shape[1])


@dataclass
class Vocabulary:
    """Centroids (k, D) plus the optional PCA learned on the same separate set."""

    centroids: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None  # (d, k*D) rows (scaled when whitening)
    conf: dict | None = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])


def save_vocabulary(
    path: str | Path, vocab: Vocabulary | np.ndarray, conf: Mapping[str, Any] | None = None
) -> Path:
    """Write a vocabulary ``.npz`` (atomically: temp file, rename)."""
    path = Path(path)
    if isinstance(vocab, np.ndarray):
        vocab = Vocabulary(centroids=vocab, conf=dict(conf) if conf else None)
    arrays = {"centroids": np.asarray(vocab.centroids, np.float32)}
    if vocab.pca_components is not None:
        arrays["pca_mean"] = np.asarray(vocab.pca_mean, np.float32)
        arrays["pca_components"] = np.asarray(vocab.pca_components, np.float32)
    c = dict(conf) if conf is not None else (vocab.conf or {})
    arrays["conf"] = np.array(json.dumps(c, default=str))
    with atomic_write(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def load_vocabulary(path: str | Path | Vocabulary | np.ndarray) -> Vocabulary:
    """Read a ``.npz`` written by :func:`save_vocabulary` or a bare (k, D) ``.npy``."""
    if isinstance(path, Vocabulary):
        return path
    if isinstance(path, np.ndarray):
        return Vocabulary(centroids=np.ascontiguousarray(path, np.float32))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a numpy vocabulary file ({e})") from None
    if isinstance(z, np.ndarray):
        c = z
        v = Vocabulary(centroids=np.ascontiguousarray(c, np.float32))
    else:
        if "centroids" not in z:
            raise ValueError(f"{path}: no 'centroids' array")
        conf = json.loads(str(z["conf"])) if "conf" in z else None
        v = Vocabulary(
            centroids=np.ascontiguousarray(z["centroids"], np.float32),
            pca_mean=z["pca_mean"] if "pca_mean" in z else None,
            pca_components=z["pca_components"] if "pca_components" in z else None,
            conf=conf,
        )
    if v.centroids.ndim != 2:
        raise ValueError(f"{path}: centroids must be (k, D), got {v.centroids.shape}")
    return v


def train_pca(
    vecs: np.ndarray, dim: int, whiten: bool = False, eps: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """PCA of (N, Dv) vectors -> (mean (Dv,), components (dim, Dv)); whitening divides each
    component by sqrt(eigenvalue). ``dim`` is capped at min(N, Dv)."""
    x = np.asarray(vecs, np.float64)
    mu = x.mean(0)
    xc = x - mu
    dim = int(min(dim, xc.shape[0], xc.shape[1]))
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comp = vt[:dim]
    if whiten:
        ev = (s[:dim] ** 2) / max(len(x) - 1, 1)
        comp = comp / np.sqrt(ev + eps)[:, None]
    return mu.astype(np.float32), comp.astype(np.float32)


# ------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------
class Assigner:
    """Nearest words of a fixed vocabulary (exact, numpy; small per-image problems run faster
    single-threaded than through FAISS' OpenMP pool on a busy machine)."""

    def __init__(self, centroids: np.ndarray):
        self.c = np.ascontiguousarray(centroids, np.float32)
        self.c2 = (self.c.astype(np.float64) ** 2).sum(1).astype(np.float32)

    def __call__(self, x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) -> squared distances (N, m) ascending, word ids (N, m) int64."""
        m = int(min(m, len(self.c)))
        x = np.ascontiguousarray(x, np.float32)
        d2 = (x * x).sum(1, keepdims=True) - 2.0 * (x @ self.c.T) + self.c2[None]
        if m == 1:
            a = np.argmin(d2, 1)[:, None]
        else:
            a = np.argpartition(d2, m - 1, axis=1)[:, :m]
            o = np.argsort(np.take_along_axis(d2, a, 1), axis=1, kind="stable")
            a = np.take_along_axis(a, o, 1)
        return np.maximum(np.take_along_axis(d2, a, 1), 0.0), a.astype(np.int64)


def _ma_weights(d2: np.ndarray, sigma: float | None) -> np.ndarray:
    if d2.shape[1] == 1:
        return np.ones_like(d2, dtype=np.float32)
    if sigma is None:
        return np.full(d2.shape, 1.0 / d2.shape[1], np.float32)
    w = np.exp(-(d2 - d2[:, :1]) / (2.0 * sigma * sigma))
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _check_dim(desc: np.ndarray, vocab: Vocabulary) -> None:
    if desc.ndim != 2 or (len(desc) and desc.shape[1] != vocab.dim):
        raise ValueError(
            f"descriptor dim {desc.shape[-1] if desc.ndim == 2 else desc.shape} "
            f"does not match the vocabulary's D={vocab.dim} (learned on another "
            f"descriptor?)"
        )


def vlad(
    desc: np.ndarray,
    vocab: Vocabulary | np.ndarray,
    multiple_assignment: int = 1,
    ma_sigma: float | None = None,
    intra_norm: bool = True,
    power: float = 0.5,
    assigner: Assigner | None = None,
    apply_pca: bool = True,
) -> np.ndarray:
    """VLAD of one image.

    Args:
        desc: (N, D) local descriptors (N may be 0).
        vocab: Vocabulary or (k, D) centroids.
        multiple_assignment, ma_sigma, intra_norm, power: see the module docstring.
    Returns:
        (k*D,) float32 unit vector (or (pca_dim,) when the vocabulary holds a PCA); zeros when
        ``desc`` is empty.
    """
    vocab = load_vocabulary(vocab)
    desc = np.asarray(desc, np.float32)
    _check_dim(desc, vocab)
    k, D = vocab.centroids.shape
    v = np.zeros((k, D), np.float32)
    if len(desc):
        assigner = assigner or Assigner(vocab.centroids)
        d2, a = assigner(desc, multiple_assignment)
        w = _ma_weights(d2, ma_sigma)
        # sum_i w_ij (x_i - c_w) per word w, as a (k, N) soft-assignment matrix product
        A = np.zeros((k, len(desc)), np.float32)
        cols = np.arange(len(desc))
        for j in range(a.shape[1]):
            A[a[:, j], cols] += w[:, j]
        v = A @ desc - A.sum(1, keepdims=True) * vocab.centroids
        if intra_norm:
            n = np.linalg.norm(v, axis=1, keepdims=True)
            v = np.where(n > 1e-12, v / np.maximum(n, 1e-12), 0.0).astype(np.float32)
        if power != 1.0:
            v = (np.sign(v) * np.abs(v) ** power).astype(np.float32)
    out = v.reshape(-1)
    nrm = float(np.linalg.norm(out))
    out = out / nrm if nrm > 1e-12 else out
    if apply_pca and vocab.pca_components is not None:
        if nrm <= 1e-12:
            return np.zeros(len(vocab.pca_components), np.float32)
        out = vocab.pca_components @ (out - vocab.pca_mean)
        n2 = float(np.linalg.norm(out))
        out = out / n2 if n2 > 1e-12 else out
    return out.astype(np.float32)


def asmk_aggregate(
    desc: np.ndarray,
    vocab: Vocabulary | np.ndarray,
    multiple_assignment: int = 1,
    binary: bool = False,
    assigner: Assigner | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ASMK per-word aggregated residuals of one image.

    Returns:
        words (n,) int64 sorted unique word ids, vecs (n, D) float32 unit rows (binarised to
        +-1/sqrt(D) with ``binary``).
    """
    vocab = load_vocabulary(vocab)
    desc = np.asarray(desc, np.float32)
    _check_dim(desc, vocab)
    D = vocab.dim
    if len(desc) == 0:
        return np.zeros(0, np.int64), np.zeros((0, D), np.float32)
    assigner = assigner or Assigner(vocab.centroids)
    _, a = assigner(desc, multiple_assignment)
    words = a.reshape(-1)
    res = np.repeat(desc, a.shape[1], axis=0) - vocab.centroids[words]
    uw, inv = np.unique(words, return_inverse=True)
    v = np.zeros((len(uw), D), np.float32)
    np.add.at(v, inv, res)
    if binary:
        v = np.where(v > 0, 1.0, -1.0).astype(np.float32) / np.sqrt(D)
    else:
        n = np.linalg.norm(v, axis=1, keepdims=True)
        keep = n[:, 0] > 1e-12
        uw, v = uw[keep], (v[keep] / n[keep]).astype(np.float32)
    return uw.astype(np.int64), v
