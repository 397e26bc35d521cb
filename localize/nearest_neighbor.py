"""The nearest-neighbour matcher (hloc's ``matchers/nearest_neighbor.py``): exact top-2 both
ways, ratio test, mutual check, one product per pair, batched over an image's partners.

Descriptors are unit (N, D) float32; squared L2 distance = ``2 - 2 * sim``. The decision rule
is ``benchmarks.reference_matchers.decide`` (hloc's, with a strict ratio test and exact ties
rejected); scores are ``(sim + 1) / 2``. One ``torch.mm`` per pair in row blocks, max reductions only when the mutual
check is on (:func:`_block_mutual`), the decision on the device (:func:`decide_torch`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch

#: CPU row-block size of the similarity product, in matrix entries (16 MB of float32)
CPU_BLOCK_ENTRIES = 1 << 22
#: GPU row-block size, in entries (512 MB of float32)
GPU_BLOCK_ENTRIES = 1 << 27
#: at most this many partner descriptors in one product, per device type (longer partner lists
#: are split; a partner larger than this gets its own product). On CPU one product per large
#: partner measures faster than a concatenated one (benchmarks/matching_speed.py: 1x4 rows)
MAX_PARTNER_ROWS = {"cpu": 1 << 12, "cuda": 1 << 16}


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch device; None = cuda (the rank's ``LOCAL_RANK`` GPU under torchrun)
    when a GPU is visible, else cpu."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


# ------------------------------------------------------------------------------------------
# torch backend: one product, top-2 along rows and columns
# ------------------------------------------------------------------------------------------
def as_2d(d: Any) -> np.ndarray:
    """(N, D) C-contiguous float32 array ((0, 1) when empty)."""
    d = np.ascontiguousarray(d, np.float32)
    return d.reshape(len(d), -1) if len(d) else np.zeros((0, 1), np.float32)


@contextlib.contextmanager
def _exact_fp32(device: torch.device) -> Iterator[None]:
    """float32 products in full precision (no TF32) on CUDA, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _float_keys(v: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Exact int64 join keys of float32 values within groups: ``group << 32 | bits(v)``
    (``-0.0`` folded into ``0.0``, so equal floats give equal keys)."""
    bits = (v + 0.0).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return (group << 32) | bits


def _block_rows_topk(
    x: torch.Tensor,
    segs: Sequence[tuple[int, int, int]],
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Rows' top-2 per segment of one product block (``topk``) into ``out`` = (v1, i1, v2)
    row slices (B, k)."""
    v1, i1, v2 = out
    for j, s, e in segs:
        v, i = x[:, s:e].topk(min(2, e - s), dim=1)
        v1[:, j] = v[:, 0]
        i1[:, j] = i[:, 0]
        if e - s > 1:
            v2[:, j] = v[:, 1]


def _block_mutual(
    x: torch.Tensor,
    segs: Sequence[tuple[int, int, int]],
    col_seg: torch.Tensor,
    seg_start: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One product block (B, M) for a MUTUAL match: only max reductions, no arg-max pass.

    A row i can only be a mutual match of column g if ``x[i, g]`` is both its row's maximum
    (within g's segment) and the block's column maximum; those candidates are found by an exact
    equality join of the two max vectors (int64 keys, sort + searchsorted) and checked on
    ``x``. Masking the candidates with ``-inf`` then gives the second values by a second max
    reduction. Rows with two candidates in a segment are row ties (second := best), columns
    with two candidate rows column ties. Writes (v1, i1 (-1 = no candidate: not mutual), v2)
    into the row slices ``out`` (B, k); ``x`` is overwritten.

    Returns:
        (M,) block column maximum, (M,) block column maximum without the candidate entries
        (= the true second value wherever the column's best row is a candidate; elsewhere a
        value <= the maximum that only matters for columns no mutual match can use).
    """
    v1, i1, v2 = out
    b, m = x.shape
    k = v1.shape[1]
    for j, s, e in segs:
        v1[:, j] = x[:, s:e].amax(dim=1)
    c1 = x.amax(dim=0)  # (M,)
    seg_ids = torch.arange(k, device=x.device).expand(b, k)
    rkeys, order = _float_keys(v1, seg_ids).reshape(-1).sort()  # (B * k,)
    ckeys = _float_keys(c1, col_seg)
    lo = torch.searchsorted(rkeys, ckeys)
    cnt = torch.searchsorted(rkeys, ckeys, right=True) - lo  # (M,) mostly 0 / 1
    g = torch.repeat_interleave(torch.arange(m, device=x.device), cnt)
    first = torch.cumsum(cnt, 0) - cnt
    rep = order[lo[g] + torch.arange(len(g), device=x.device) - first[g]]  # flat (row, seg)
    r = rep // k
    ok = x[r, g] == v1.reshape(-1)[rep]
    rep, r, g = rep[ok], r[ok], g[ok]
    x[r, g] = -float("inf")
    for j, s, e in segs:
        v2[:, j] = x[:, s:e].amax(dim=1)
    c2 = x.amax(dim=0)
    n_row = torch.bincount(rep, minlength=b * k)
    tie = n_row.reshape(b, k) > 1
    v2[tie] = v1[tie]
    i1.fill_(-1)
    i1.view(-1)[rep] = g - seg_start[rep % k]
    col_tie = torch.bincount(g, minlength=m) > 1
    c2 = torch.where(col_tie, c1, c2)
    return c1, c2


def block_rows(
    n0: int, m: int, device: torch.device | str, block_entries: int | None = None
) -> int:
    """Rows of q per product block of an (n0, m) similarity: ``block_entries // m`` (default
    :data:`CPU_BLOCK_ENTRIES` / :data:`GPU_BLOCK_ENTRIES`), at least 32, at most n0."""
    if block_entries is None:
        block_entries = (
            GPU_BLOCK_ENTRIES if torch.device(device).type == "cuda" else CPU_BLOCK_ENTRIES
        )
    return max(1, min(n0, max(32, block_entries // max(m, 1))))


def top2_both(
    q: torch.Tensor,
    db: torch.Tensor,
    bounds: Sequence[int],
    mutual: bool = True,
    block_entries: int | None = None,
) -> tuple[
    tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None
]:
    """Top-2 of the similarity ``q @ db.T`` along rows (per segment of db) and along columns.

    ONE product, in row blocks written into one reused buffer. Without ``mutual``: the rows'
    top-2 per segment (``topk``), no column work. With ``mutual``: :func:`_block_mutual` per
    block (max reductions and a join instead of arg-max passes, which cost ~10x a max on CPU),
    and the columns' best and second VALUES merged across blocks. The columns need no
    indices: row i is the unique best of column g exactly when ``cols[0][g] == rows[0][i]``
    (the same float of the same product) and ``cols[0][g] > cols[1][g]`` (see
    :func:`decide_torch`).

    Args:
        q: (N0, D) float32; db: (M, D) float32 on the same device, N0, M >= 1.
        bounds: segment offsets into db rows, ``0 = b_0 <= ... <= b_k = M`` (one per partner).
        mutual: compute what the mutual check needs (see Returns).
        block_entries: rows of q per product block = ``block_entries // M`` (default per device).
    Returns:
        rows: (v1, i1, v2) each (N0, k): best sim, its row index inside the segment, second sim
        (``-inf`` where the segment has < 2 rows; for empty segments -inf / 0). With ``mutual``
        i1 is -1 for rows that cannot be a mutual match (their best is not the best of its
        column within their block); v1 is always exact, v2 wherever i1 >= 0.
        cols (``mutual`` only, else None): (v1, v2) each (M,): best and second sim of each db
        row against all of q, exact wherever the best row can be a mutual match.
    """
    n0, m = len(q), len(db)
    k = len(bounds) - 1
    nb = block_rows(n0, m, q.device, block_entries)
    ninf = -float("inf")
    rv1 = torch.full((n0, k), ninf, device=q.device)
    rv2 = torch.full((n0, k), ninf, device=q.device)
    ri1 = torch.zeros((n0, k), dtype=torch.int64, device=q.device)
    segs = [(j, bounds[j], bounds[j + 1]) for j in range(k) if bounds[j + 1] > bounds[j]]
    lens = torch.as_tensor([bounds[j + 1] - bounds[j] for j in range(k)], device=q.device)
    col_seg = torch.repeat_interleave(torch.arange(k, device=q.device), lens)
    seg_start = torch.as_tensor(list(bounds[:-1]), dtype=torch.int64, device=q.device)
    dbt = db.T
    buf = torch.empty((nb, m), device=q.device)
    c1 = c2 = None
    with _exact_fp32(q.device):
        for r in range(0, n0, nb):
            x = torch.mm(q[r : r + nb], dbt, out=buf[: min(nb, n0 - r)])  # (B, M)
            out = (rv1[r : r + len(x)], ri1[r : r + len(x)], rv2[r : r + len(x)])
            if not mutual:
                _block_rows_topk(x, segs, out)
                continue
            b1, b2 = _block_mutual(x, segs, col_seg, seg_start, out)
            if c1 is None:
                c1, c2 = b1, b2
            else:  # merge two top-2 lists (an exact tie gives second == best)
                c2 = torch.maximum(torch.minimum(c1, b1), torch.maximum(c2, b2))
                c1 = torch.maximum(c1, b1)
    return (rv1, ri1, rv2), ((c1, c2) if mutual else None)


def _passes(
    v1: torch.Tensor,
    v2: torch.Tensor,
    has2: torch.Tensor | bool,
    ratio: float | None,
    distance_threshold: float | None,
) -> torch.Tensor:
    """Tensor version of :func:`_one_way`'s tests on (best, second, has-second) -> bool mask."""
    d1 = (2.0 - 2.0 * v1.double()).clamp_min(0.0)
    has2 = torch.as_tensor(has2, device=v1.device).expand_as(v1)
    d2 = torch.where(
        has2, (2.0 - 2.0 * v2.double()).clamp_min(0.0), torch.full_like(d1, float("inf"))
    )
    ok = ~(has2 & (v1 == v2))
    if ratio is not None:
        ok &= d1 < (ratio**2) * d2
    if distance_threshold is not None:
        ok &= d1 <= distance_threshold**2
    return ok


def decide_torch(
    rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cols: tuple[torch.Tensor, torch.Tensor] | None,
    bounds: Sequence[int],
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decide` for all k partners at once, on the device of the inputs.

    The backward half of the mutual check needs no column indices: db row g's best is query
    row i (and unique) iff ``c1[g] == rv1[i]`` and ``c1[g] != c2[g]``; a tie ``c1 == c2`` is
    ambiguous and rejected, as in :func:`decide`.

    Args:
        rows, cols, bounds: as returned by / given to :func:`top2_both` (same ``mutual``).
    Returns:
        matches0 (k, N0) int64 (-1 = none), scores0 (k, N0) float32.
    """
    rv1, ri1, rv2 = rows
    dev = rv1.device
    n0, k = rv1.shape
    b = torch.as_tensor(list(bounds), dtype=torch.int64, device=dev)
    seg_len = b[1:] - b[:-1]  # (k,)
    ok = _passes(rv1, rv2, (seg_len >= 2)[None, :], ratio, distance_threshold)
    ok &= (seg_len > 0)[None, :] & (ri1 >= 0)
    m0 = torch.where(ok, ri1, torch.full_like(ri1, -1))
    if mutual:
        assert cols is not None
        c1, c2 = cols
        col_ok = _passes(c1, c2, n0 >= 2, ratio, distance_threshold)  # (M,)
        g = (m0 + b[:-1][None, :]).clamp(0, max(len(c1) - 1, 0))
        back = col_ok[g] & (c1[g] == rv1)
        m0 = torch.where((m0 >= 0) & back, m0, torch.full_like(m0, -1))
    scores = torch.where(m0 >= 0, (rv1.float() + 1.0) / 2.0, torch.zeros_like(rv1))
    return m0.T, scores.T


def _as_tensor(d: Any, device: torch.device) -> torch.Tensor:
    """(N, D) float32 tensor on ``device`` (no copy when it is already there)."""
    if isinstance(d, torch.Tensor):
        t = d.to(device=device, dtype=torch.float32)
        return t.reshape(len(t), -1) if t.numel() else t.reshape(len(t), 0)
    return torch.from_numpy(as_2d(d)).to(device)


def match_image(
    d0: Any,
    partners: Sequence[Any],
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
    device: torch.device | str | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Match one image against each of its partners: one product per chunk of partners of at
    most :data:`MAX_PARTNER_ROWS` rows (per device type; a larger partner is its own chunk).

    Args:
        d0: (N0, D) descriptors (numpy or torch, any float dtype; unit rows); N0 may be 0.
        partners: k arrays (N_j, D) (N_j may be 0).
        device: torch device (None = cuda when present); a GPU-resident tensor stays there.
    Returns:
        per partner: matches0 (N0,) int32 index into its descriptors or -1, scores0 (N0,) float32.
    """
    dev = torch.device(device) if device is not None else default_device()
    n0 = len(d0)
    empty = (np.full(n0, -1, np.int32), np.zeros(n0, np.float32))
    if n0 == 0 or not partners:
        return [(empty[0].copy(), empty[1].copy()) for _ in partners]
    q = _as_tensor(d0, dev)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    start = 0
    max_rows = MAX_PARTNER_ROWS.get(dev.type, MAX_PARTNER_ROWS["cpu"])
    while start < len(partners):  # chunks of at most max_rows partner descriptors
        stop, total = start, 0
        while stop < len(partners) and (stop == start or total + len(partners[stop]) <= max_rows):
            total += len(partners[stop])
            stop += 1
        chunk = [_as_tensor(p, dev) for p in partners[start:stop]]
        for c in chunk:
            if len(c) and c.shape[1] != q.shape[1]:
                raise ValueError(f"descriptor dims differ: {q.shape[1]} vs {c.shape[1]}")
        bounds = np.concatenate([[0], np.cumsum([len(c) for c in chunk])]).tolist()
        if bounds[-1] == 0:
            out += [(empty[0].copy(), empty[1].copy()) for _ in chunk]
        else:
            nonempty = [c for c in chunk if len(c)]
            db = nonempty[0] if len(nonempty) == 1 else torch.cat(nonempty)
            rows, cols = top2_both(q, db, bounds, mutual)
            m, s = decide_torch(rows, cols, bounds, ratio, distance_threshold, mutual)
            m_np = m.to(torch.int32).cpu().numpy()
            s_np = s.cpu().numpy()
            out += [(m_np[j], s_np[j]) for j in range(len(chunk))]
        start = stop
    return out


def match_descriptors(
    d0: Any,
    d1: Any,
    ratio: float | None = 0.8,
    distance_threshold: float | None = None,
    mutual: bool = True,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match two descriptor sets (rows are unit vectors): :func:`match_image` with one partner.

    Args:
        d0: (N0, D), d1: (N1, D) float (float16 accepted); N0 or N1 may be 0.
        ratio: ratio-test threshold on L2 distances (None = off).
        distance_threshold: max L2 distance of a match (None = off).
        mutual: keep mutual nearest neighbours only.
        device: torch device (None = cuda when present).
    Returns:
        matches0 (N0,) int32 index into d1 or -1; scores0 (N0,) float32 ``(sim + 1) / 2``, 0 for
        unmatched.
    """
    return match_image(d0, [d1], ratio, distance_threshold, mutual, device=default_device(device))[
        0
    ]
