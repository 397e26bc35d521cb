"""Patches per second: the registry's HardNet vs kornia.feature.HardNet vs OpenCV SIFT/RootSIFT.

Same 1024 random-texture patches for every descriptor, same process, warm-up run first.
kornia's HardNet is built with ``pretrained=False`` (no download); speed does not depend on the
weights. Prints a table with the ratio against kornia's HardNet.

    python benchmarks/descriptor_speed.py [--n 1024] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def timeit(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import kornia.feature as KF

    from descriptors import registry

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1024, help="patches per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (best one is reported)")
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device of the learned descriptors (default: cuda if present)",
    )
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    patches = torch.from_numpy(rng.random((args.n, 1, 32, 32), dtype=np.float32))

    rows = []
    ours = registry.load("hardnet", device=args.device)
    ours_name = "registry hardnet (weights/hardnet.pt)"
    kor = KF.HardNet(pretrained=False).to(args.device).eval()
    x_dev = patches.to(args.device)

    @torch.no_grad()
    def run_kornia():
        for i in range(0, args.n, 1024):
            kor(x_dev[i : i + 1024]).cpu()

    fns = {"kornia": run_kornia, "ours": lambda: ours(patches)}
    for name in registry.OPENCV_NAMES:
        ex = registry.load(name)
        fns[name] = lambda ex=ex: ex(patches)
    # interleaved rounds (best of each) so background load hits every descriptor alike
    best = {k: float("inf") for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(args.repeats):
        for k, f in fns.items():
            best[k] = min(best[k], timeit(f, 1, warmup=False))
    t_k = best["kornia"]
    labels = {
        "kornia": "kornia.feature.HardNet",
        "ours": ours_name,
        **{n: f"{n} (OpenCV, per patch)" for n in registry.OPENCV_NAMES},
    }
    for key, name in labels.items():
        t = best[key]
        rows.append(
            {
                "descriptor": name,
                "seconds": t,
                "patches_per_s": args.n / t,
                "ratio_vs_kornia": t_k / t,
            }
        )
    print(
        f"\n{args.n} patches 32x32, device={args.device}, threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'descriptor':52s} {'patches/s':>12s} {'speed vs kornia':>16s}")
    for r in rows:
        print(f"{r['descriptor']:52s} {r['patches_per_s']:12.0f} {r['ratio_vs_kornia']:15.2f}x")
    return rows


if __name__ == "__main__":
    main()
