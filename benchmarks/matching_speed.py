"""Matching speed against the GEMM floor: every matcher backend vs one N x N x D product.

Baseline (measured in the same process, interleaved with the backends): ONE ``torch.mm`` of
N x D by D x N float32 unit descriptors on the same device. Each backend then matches

- one pair N x N (``match_descriptors``: product(s), top-2 both ways, mutual + ratio decision),
- one image against ``--partners`` partners of N descriptors (``match_image``, batched), reported
  per pair,

and its time is printed as a ratio to the baseline (goal: <= 1.3x at N = 4096). A second floor
row, ``mm row blocks``, is the same product computed as the ``torch`` backend computes it (row
blocks written into one reused buffer, no reduction): the baseline ``torch.mm`` also pays for
allocating and faulting in its N x N output, so the blocked product alone is the strict
compute floor of a one-product matcher. A reference row is hloc's algorithm, written here as
hloc's ``matchers/nearest_neighbor.py`` does it (``torch`` product, ``topk(2)`` along rows and
again along columns of the transposed product, ratio test on ``2 - 2 sim``, mutual check by
gather). The FAISS matchers of the first versions (``benchmarks/reference_matchers.py``:
``faiss-index``, a fresh index per direction and pair; ``faiss``, brute force) are timed too. The
decisions of every row are asserted identical to ``faiss-index``, except
entries that are near ties (gap below ``--tie_tol``) where float rounding of different GEMMs may
flip a decision (hloc also keeps exact ratio ties, ``<=``, that we reject); their count is printed.

    python -m benchmarks.matching_speed                     # N = 2048, 4096 and 8192, CPU
    python -m benchmarks.matching_speed --n 1024 --repeats 3
    python -m benchmarks.matching_speed --device cuda       # torch on GPU, FAISS GPU if present

Writes JSON to ``outputs/benchmarks/matching_speed.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks import reference_matchers as ref
from descriptors.util import setup_logging, write_json
from localize import nearest_neighbor as nnm

logger = logging.getLogger(__name__)


def make_descriptors(n0: int, n1: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """d1 random unit vectors; 60% of d0 are noisy copies of d1 rows, the rest random."""
    rng = np.random.default_rng(seed)
    d1 = rng.standard_normal((n1, dim), dtype=np.float32)
    k = int(0.6 * n0)
    src = d1[rng.integers(0, n1, k)]
    noise = rng.uniform(0.05, 0.4, (k, 1)).astype(np.float32) / np.sqrt(dim / 32)
    d0 = np.concatenate(
        [
            src + noise * rng.standard_normal((k, dim), dtype=np.float32),
            rng.standard_normal((n0 - k, dim), dtype=np.float32),
        ]
    )
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    return d0.astype(np.float32), d1.astype(np.float32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _near_tie_rows(d0: np.ndarray, d1: np.ndarray, ratio: float | None, tol: float) -> np.ndarray:
    """(N0,) True where row i's decision (either direction touching i) is within tol of flipping."""
    s = d0 @ d1.T
    top = np.sort(s, axis=1)[:, -2:]
    close = np.abs(top[:, 1] - top[:, 0]) < tol
    colt = np.sort(s, axis=0)[-2:]
    cclose = np.abs(colt[1] - colt[0]) < tol
    if ratio is not None:
        e = np.maximum(2 - 2 * top.astype(np.float64), 0)
        close |= np.abs(e[:, 1] - ratio**2 * e[:, 0]) < 4 * tol
        ec = np.maximum(2 - 2 * colt.astype(np.float64), 0)
        cclose |= np.abs(ec[1] - ratio**2 * ec[0]) < 4 * tol
    return close | cclose[np.argmax(s, axis=1)]


def hloc_nearest_neighbor(
    t0: torch.Tensor,
    t1: torch.Tensor,
    ratio: float | None,
    distance: float | None = None,
    mutual: bool = True,
) -> torch.Tensor:
    """hloc's NN matcher algorithm on (N0, D) / (N1, D) unit descriptors -> (N0,) int64 (-1 none).

    The same steps as hloc ``matchers/nearest_neighbor.py`` (product, top-k along each axis,
    ratio / distance test on squared distances, mutual check), re-written for the comparison."""
    sim = t0 @ t1.T

    def find_nn(s: torch.Tensor) -> torch.Tensor:
        v, i = s.topk(2 if ratio else 1, dim=-1, largest=True)
        dist = 2 * (1 - v)
        ok = torch.ones(i.shape[:-1], dtype=torch.bool, device=s.device)
        if ratio:
            ok &= dist[..., 0] <= ratio**2 * dist[..., 1]
        if distance:
            ok &= dist[..., 0] <= distance**2
        return torch.where(ok, i[..., 0], i.new_tensor(-1))

    m0 = find_nn(sim)
    if mutual:
        m1 = find_nn(sim.T)
        loop = m1.gather(0, m0.clamp(min=0))
        m0 = torch.where(
            (m0 > -1) & (loop == torch.arange(len(m0), device=m0.device)), m0, m0.new_tensor(-1)
        )
    return m0


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of each function, run round-robin (so load changes hit all alike)."""
    for f in fns.values():  # warm-up
        f()
    _sync(device)
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            _sync(device)
            ts[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in ts.items()}


def run(
    n: int,
    dim: int,
    partners: int,
    repeats: int,
    ratio: float,
    device: torch.device,
    tie_tol: float,
    seed: int,
) -> list[dict]:
    """One size: baseline GEMM + each backend per pair and batched; rows for the table."""
    d0, d1 = make_descriptors(n, n, dim, seed)
    others = [make_descriptors(n, n, dim, seed + 1 + j)[1] for j in range(partners - 1)]
    t0, t1 = torch.from_numpy(d0).to(device), torch.from_numpy(d1).to(device)
    parts_np = [d1] + others
    parts_t = [t1] + [torch.from_numpy(o).to(device) for o in others]
    ref_m, _ = ref.match_image_reference(d0, [d1], ratio, None, True, "faiss-index")[0]
    tie = _near_tie_rows(d0, d1, ratio, tie_tol)
    nb = nnm.block_rows(n, n, device)
    buf = torch.empty((nb, n), device=device)

    def blocked_gemm() -> None:
        for r in range(0, n, nb):
            torch.mm(t0[r : r + nb], t1.T, out=buf[: min(nb, n - r)])

    fns: dict[str, Callable[[], object]] = {
        "gemm": lambda: torch.mm(t0, t1.T),
        "mm row blocks (floor)": blocked_gemm,
        "hloc NN (mm + topk x2)": lambda: hloc_nearest_neighbor(t0, t1, ratio),
    }
    fns["torch pair"] = lambda: nnm.match_image(t0, [t1], ratio, None, True, device=device)
    fns[f"torch 1x{partners}"] = lambda: nnm.match_image(
        t0, parts_t, ratio, None, True, device=device
    )
    for b in ref.KNN:
        fns[f"{b} pair"] = lambda b=b: ref.match_image_reference(d0, [d1], ratio, None, True, b)
        fns[f"{b} 1x{partners}"] = lambda b=b: ref.match_image_reference(
            d0, parts_np, ratio, None, True, b
        )
    results = {"torch": nnm.match_image(t0, [t1], ratio, None, True, device=device)[0][0]}
    for b in ref.KNN:
        results[b] = ref.match_image_reference(d0, [d1], ratio, None, True, b)[0][0]
    for b, m in results.items():  # identical decisions (up to near ties)
        bad = np.where(m != ref_m)[0]
        assert tie[bad].all(), f"{b}: {len(bad)} decisions differ from faiss-index, not near ties"
    hm = hloc_nearest_neighbor(t0, t1, ratio).cpu().numpy()
    bad = np.where(hm != ref_m)[0]
    assert tie[bad].all(), f"hloc NN: {len(bad)} decisions differ from faiss-index, not near ties"
    times = time_interleaved(fns, repeats, device)
    g = times["gemm"]
    rows = [{"n": n, "method": "torch.mm (baseline)", "ms_per_pair": g * 1e3, "x_gemm": 1.0}]
    for k, t in times.items():
        if k == "gemm":
            continue
        per_pair = t / partners if k.endswith(f"1x{partners}") else t
        rows.append({"n": n, "method": k, "ms_per_pair": per_pair * 1e3, "x_gemm": per_pair / g})
    rows[0]["near_ties"] = int(tie.sum())
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[2048, 4096, 8192],
        help="descriptors per image (N0 = N1)",
    )
    p.add_argument("--dim", type=int, default=128, help="descriptor dimension")
    p.add_argument(
        "--partners",
        type=int,
        default=10,
        help="partners of one image in the batched (match_image) rows",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    p.add_argument("--ratio", type=float, default=0.8, help="ratio test threshold")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--tie_tol",
        type=float,
        default=1e-5,
        help="similarity gap below which a differing decision counts as a near tie",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random descriptors")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/benchmarks/matching_speed.json"),
        help="JSON result file",
    )
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    device = torch.device(args.device)
    rows = []
    for n in args.n:
        rows += run(
            n, args.dim, args.partners, args.repeats, args.ratio, device, args.tie_tol, args.seed
        )
    print(
        f"\nmatching N x N x {args.dim}, mutual NN + ratio {args.ratio}, median of "
        f"{args.repeats}, device {device} (torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}); per-pair time as a multiple of ONE N x N x {args.dim} GEMM"
    )
    print(f"{'N':>5s}  {'method':24s} {'ms/pair':>9s} {'x GEMM':>7s}")
    for r in rows:
        print(f"{r['n']:5d}  {r['method']:24s} {r['ms_per_pair']:9.1f} {r['x_gemm']:7.2f}")
    result = {
        "dim": args.dim,
        "ratio": args.ratio,
        "repeats": args.repeats,
        "partners": args.partners,
        "device": str(device),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "matcher": "localize.nearest_neighbor (torch)",
        "rows": rows,
    }
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
