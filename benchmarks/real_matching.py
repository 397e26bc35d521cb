"""Image matching on REAL photographs: HPatches wormhole (1->2..6) and Graffiti (1->3).

    python benchmarks/real_matching.py [--shared ../shared/data] [--features hardnet PATH ...]
        [--max_keypoints 2000] [--out outputs/real_matching] [--viz DIR [--viz_row rootsift]]

Protocol (the same for every row): per image, the ``max_keypoints`` strongest DoG keypoints of
``descriptors.patches.detect_dog`` (full resolution, extraction defaults), detected ONCE and shared
by every descriptor; descriptors of those keypoints by ``localize.dog_features.describe`` (OpenCV
SIFT / RootSIFT on the full image, learned ones on 12-sigma oriented patches); mutual nearest
neighbours with no ratio test (``localize.nearest_neighbor.match_descriptors``). A match is
correct at t px when the ground-truth homography maps its keypoint in image 1 within t px of its
keypoint in image k. Reported, averaged over the pairs of a sequence: correct matches at
1/3/5 px, MMA (correct / all matches) at 1/3/5 px, and homography accuracy (OpenCV RANSAC on
the matches, mean corner error <= 1/3/5 px).

Rows: sift, rootsift, an untrained L2-Net (seed 0), every shipped recipe with weights, the
published anchors found in ``<shared>/published`` (TFeat, HardTFeat), and any ``--features``.
Both sequences are held out: no shipped weights are trained on them.
``--viz DIR`` writes, for one row (``--viz_row``), one picture per sequence pair
(``<DIR>/<sequence>_1-<k>_<row>.png``, ``localize.visualization``): the matches, green when
correct at 3 px under the ground-truth homography, red otherwise.
Exits with a message (status 0) when the shared data folder is absent.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from descriptors import tables  # noqa: E402
from descriptors.hpatches_eval import homography_corner_error  # noqa: E402
from descriptors.patches import detect_dog  # noqa: E402
from descriptors.registry import OPENCV_NAMES  # noqa: E402
from descriptors.util import setup_logging, write_json  # noqa: E402
from localize import dog_features, extract_features, image_io, visualization  # noqa: E402
from localize.cli import cli_errors, positive_int  # noqa: E402
from localize.nearest_neighbor import match_descriptors  # noqa: E402

logger = logging.getLogger("real_matching")

THRESHOLDS = (1, 3, 5)
VIZ_THRESHOLD = 3  # px: a drawn match is green when correct at this threshold
SEQUENCES = {"wormhole": ("hpatches_v_wormhole", [2, 3, 4, 5, 6]), "graffiti": ("graffiti", [3])}


def _read_seq(
    root: Path, others: list[int]
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(reference image 1 (H, W) uint8, [(image k, H_1_k (3, 3)), ...] for k in ``others``)."""

    def img(i: int) -> np.ndarray:
        for ext in ("png", "ppm", "jpg"):
            p = root / f"{i}.{ext}"
            if p.is_file():
                return image_io.read_image(p)
        raise FileNotFoundError(f"{root}: image {i} missing")

    views = []
    for k in others:
        H = np.loadtxt(root / f"H_1_{k}")
        if H.shape != (3, 3):
            raise ValueError(f"{root / f'H_1_{k}'}: not a 3x3 homography")
        views.append((img(k), H))
    return img(1), views


def untrained_l2net() -> Any:
    """L2-Net with its random initialisation (seed 0), eval mode, as a registry extractor."""
    from descriptors.models import build_model
    from descriptors.registry import TorchExtractor

    torch.manual_seed(0)
    model = build_model("l2net", dim=128)
    return TorchExtractor("untrained-l2net", model, 128, 32, device="cpu")


def _features(gray: np.ndarray, extractor: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    conf = {**extract_features.default_conf, "max_keypoints": n, "resize_max": None}
    kps, xy, size, angle, _ = detect_dog(
        gray, n, conf["contrast_threshold"], conf["edge_threshold"], conf["min_size"]
    )
    # descriptors where extraction cuts its patches; positions as extraction stores them (true
    # pixel centres: OpenCV's 0.25 px upsampled-octave shift removed) for the ground-truth check
    return xy - dog_features.OPENCV_XY_OFFSET, dog_features.describe(
        gray, kps, xy, size, angle, extractor, conf
    )


def mutual_matches(d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """(M, 2) int [i0, i1] mutual nearest neighbours of (N0, D) / (N1, D) descriptors."""
    m0, _ = match_descriptors(d0, d1, ratio=None, mutual=True)
    i0 = np.flatnonzero(m0 >= 0)
    return np.stack([i0, m0[i0]], 1).astype(np.int64).reshape(-1, 2)


def match_errors(
    xy0: np.ndarray, xy1: np.ndarray, matches: np.ndarray, H: np.ndarray
) -> np.ndarray:
    """(M,) pixel distance between H (3, 3; image 0 -> 1) applied to each match's keypoint in
    image 0 and its keypoint in image 1 (xy (N, 2) pixels)."""
    if not len(matches):
        return np.zeros(0)
    p0 = xy0[matches[:, 0]].astype(np.float64)
    p1 = xy1[matches[:, 1]].astype(np.float64)
    return np.linalg.norm(cv2.perspectiveTransform(p0[None], H)[0] - p1, axis=1)


def evaluate_pair(
    xy0: np.ndarray, xy1: np.ndarray, matches: np.ndarray, H: np.ndarray, shape0: tuple[int, int]
) -> dict:
    """Metrics of one image pair: xy (N, 2) pixels, matches (M, 2) [i0, i1], H maps 0 -> 1,
    ``shape0`` = (h, w) of image 0 (its corners measure the homography accuracy)."""
    i0 = matches[:, 0]
    p0, p1 = xy0[i0].astype(np.float64), xy1[matches[:, 1]].astype(np.float64)
    err = match_errors(xy0, xy1, matches, H)
    out: dict[str, Any] = {"matches": int(len(i0))}
    for t in THRESHOLDS:
        c = int((err <= t).sum())
        out[f"correct@{t}"] = c
        out[f"mma@{t}"] = c / max(len(i0), 1)
    cerr = homography_corner_error(p0, p1, H, shape0, 3.0, max_iters=5000, confidence=0.999)
    for t in THRESHOLDS:
        out[f"homography@{t}"] = float(cerr <= t)
    return out


def load_rows(shared: Path, features: list[str], only: list[str] | None = None) -> dict[str, Any]:
    """{row name: extractor}: the standard rows (``only`` keeps these) plus ``features``."""
    from descriptors.registry import DescriptorError, available, load

    rows: dict[str, Any] = {}
    for name in [*OPENCV_NAMES, "untrained-l2net", *available()]:
        if name in rows or (only is not None and name not in only):
            continue
        rows[name] = untrained_l2net() if name == "untrained-l2net" else load(name, device="cpu")
    pub = shared / "published"
    for f in sorted(pub.iterdir()) if pub.is_dir() else []:
        if only is not None and f"pub:{f.stem}" not in only:
            continue
        try:
            rows[f"pub:{f.stem}"] = load(str(f), device="cpu")
        except DescriptorError as e:
            logger.warning("published checkpoint %s not loadable: %s", f, e)
    for f in features:
        rows[Path(f).name if Path(f).exists() else f] = load(f, device="cpu")
    return rows


def run(
    shared: Path,
    rows: dict[str, Any],
    max_keypoints: int,
    sequences: list[str] | None = None,
    viz_dir: Path | None = None,
    viz_row: str = "rootsift",
) -> dict[str, dict[str, dict]]:
    """{sequence: {row: averaged metrics}} for the extractors ``rows`` (:func:`load_rows`) on
    the sequences of :data:`SEQUENCES` (``sequences`` keeps these). With ``viz_dir``, row
    ``viz_row``'s matches of every pair are drawn there (module docstring)."""
    results: dict[str, dict[str, dict]] = {}
    for seq, (folder, others) in SEQUENCES.items():
        if sequences is not None and seq not in sequences:
            continue
        root = shared / folder
        if not root.is_dir():
            logger.warning("%s missing: skipping %s", root, seq)
            continue
        ref, views = _read_seq(root, others)
        for name, ex in rows.items():
            xy0, d0 = _features(ref, ex, max_keypoints)
            per = []
            for k, (img, H) in zip(others, views):
                xy1, d1 = _features(img, ex, max_keypoints)
                matches = mutual_matches(d0, d1)
                per.append(evaluate_pair(xy0, xy1, matches, H, ref.shape))
                if viz_dir is not None and name == viz_row:
                    ok = match_errors(xy0, xy1, matches, H) <= VIZ_THRESHOLD
                    fig = visualization.plot_images([ref, img], dpi=100)
                    visualization.plot_matches(
                        xy0[matches[:, 0]],
                        xy1[matches[:, 1]],
                        visualization.cm_RdGn(ok),
                        lw=0.5,
                        a=0.3,
                        fig=fig,
                    )
                    visualization.add_text(
                        0,
                        f"{seq} 1-{k} {name}: {int(ok.sum())}/{len(ok)} "
                        f"correct at {VIZ_THRESHOLD} px",
                        fig=fig,
                    )
                    visualization.add_legend(
                        1,
                        [(visualization.INLIER, "correct"), (visualization.OUTLIER, "wrong")],
                        fig=fig,
                    )
                    visualization.save_plot(
                        viz_dir / f"{seq}_1-{k}_{name.replace(':', '-')}.png", fig=fig
                    )
            results.setdefault(seq, {})[name] = {
                k: float(np.mean([p[k] for p in per])) for k in per[0]
            }
            logger.info("%s %s: %s", seq, name, results[seq][name])
    return results


def format_table(results: dict[str, dict[str, dict]]) -> str:
    blocks = []
    for seq, rows in results.items():
        base = rows.get("rootsift", {}).get("correct@3")
        head = (
            [seq]
            + [f"corr@{t}" for t in THRESHOLDS]
            + [f"MMA@{t}" for t in THRESHOLDS]
            + [f"H@{t}" for t in THRESHOLDS]
            + ["#match"]
            + (["corr@3 / RootSIFT"] if base else [])
        )
        body = [
            [name]
            + [f"{r[f'correct@{t}']:.1f}" for t in THRESHOLDS]
            + [f"{r[f'mma@{t}']:.3f}" for t in THRESHOLDS]
            + [f"{r[f'homography@{t}']:.2f}" for t in THRESHOLDS]
            + [f"{r['matches']:.1f}"]
            + ([f"x{r['correct@3'] / base:.3f}"] if base else [])
            for name, r in rows.items()
        ]
        blocks.append(tables.format_table(head, body) + "\n")
    return "\n".join(blocks)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shared",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="shared data folder holding the sequences and published/",
    )
    p.add_argument("--features", nargs="*", default=[], help="extra registry names / checkpoints")
    p.add_argument(
        "--max_keypoints", type=positive_int, default=2000, help="strongest DoG keypoints per image"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="ROW",
        help="standard rows to keep (sift rootsift untrained-l2net hardnet pub:HardTFeat ...)",
    )
    p.add_argument(
        "--sequences",
        nargs="*",
        default=None,
        choices=list(SEQUENCES),
        help="sequences to run (default: all)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/real_matching"),
        help="folder of real_matching.json",
    )
    p.add_argument(
        "--viz",
        type=Path,
        default=None,
        metavar="DIR",
        help="write one match picture per sequence pair of --viz_row here",
    )
    p.add_argument(
        "--viz_row", default="rootsift", metavar="ROW", help="row drawn by --viz (default rootsift)"
    )
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    if not args.shared.is_dir():
        print(
            f"real_matching: shared data folder {args.shared} not found; nothing to measure "
            f"(pass --shared DIR)"
        )
        return {}
    with cli_errors("real_matching"):
        rows = load_rows(args.shared, args.features, args.only)
        if args.viz is not None and args.viz_row not in rows:
            p.error(f"--viz_row {args.viz_row!r} is not one of the rows {list(rows)}")
        results = run(args.shared, rows, args.max_keypoints, args.sequences, args.viz, args.viz_row)
    print(format_table(results))
    write_json(args.out / "real_matching.json", results)
    if args.viz is not None:
        print(f"match pictures of {args.viz_row}: {args.viz}")
    return results


if __name__ == "__main__":
    main()
