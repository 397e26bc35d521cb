"""Full-image HPatches matching: mean matching accuracy (MMA) and homography accuracy.

    python benchmarks/hpatches_mma.py --seq /work/shared/data/hpatches_v_wormhole \
        --features sift rootsift hardnet [--max-keypoints 2000] [--out outputs/hpatches_mma]

One or more sequences in the hpatches-sequences layout (``<seq>/{1..6}.(ppm|png)`` + ``H_1_k``,
H maps pixels of image 1 to image k). For every feature: ``localize.extract_features``'s keypoints and
descriptors, ``localize.match_features``'s mutual nearest neighbours (``pipelines.hpatches.full_image_mma``). Prints MMA at 1..10 px, homography accuracy at
1/3/5 px mean corner error, mean keypoints / matches; writes ``<out>/mma.json`` and a
``mma.png`` curve. Features whose weights are missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from descriptors import registry, tables  # noqa: E402
from descriptors.util import atomic_write, setup_logging, write_json  # noqa: E402
from pipelines.hpatches import MMA_DEFAULTS, full_image_mma  # noqa: E402

logger = logging.getLogger(__name__)


def format_table(results: dict[str, dict]) -> str:
    ts = (1, 2, 3, 5, 10)
    hs = MMA_DEFAULTS["homography_thresholds"]
    head = ["feature"] + [f"MMA@{t}" for t in ts] + [f"H@{e}" for e in hs] + ["#kp", "#match"]
    rows = [
        [f]
        + [f"{100 * r['mma'][float(t)]:.1f}" for t in ts]
        + [f"{100 * r['homography_acc'][float(e)]:.0f}" for e in hs]
        + [f"{r['n_keypoints']:.0f}", f"{r['n_matches']:.0f}"]
        for f, r in results.items()
    ]
    return tables.format_table(head, rows)


def _average(per_seq: list[dict]) -> dict:
    """Average MMA / homography accuracy / counts over sequences."""
    import numpy as np

    out = {"mma": {}, "homography_acc": {}}
    for key in ("mma", "homography_acc"):
        for t in per_seq[0][key]:
            out[key][t] = float(np.mean([r[key][t] for r in per_seq]))
    out["n_keypoints"] = float(np.mean([r["n_keypoints"] for r in per_seq]))
    out["n_matches"] = float(np.mean([r["n_matches"] for r in per_seq]))
    return out


def _plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for f, r in results.items():
        ts = sorted(r["mma"])
        ax.plot(ts, [r["mma"][t] for t in ts], marker="o", label=f)
    ax.set_xlabel("threshold [px]")
    ax.set_ylabel("MMA")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.4)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--seq",
        nargs="+",
        required=True,
        help="sequence folder(s) in the hpatches-sequences layout",
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=["sift", "rootsift"],
        help="registry names or checkpoint paths (default: sift rootsift)",
    )
    p.add_argument(
        "--max-keypoints",
        type=int,
        default=MMA_DEFAULTS["max_keypoints"],
        help="strongest DoG keypoints kept per image",
    )
    p.add_argument("--out", default="outputs/hpatches_mma", help="folder for mma.json and mma.png")
    p.add_argument(
        "--device",
        default=None,
        help="torch device of the learned descriptors (default: cuda if present)",
    )
    a = p.parse_args(argv)

    results, per_seq, skipped = {}, {}, {}
    for f in a.features:
        try:
            ext = registry.load(f, device=a.device)
        except registry.DescriptorError as e:
            skipped[f] = str(e)
            continue
        rs = [full_image_mma(s, ext, max_keypoints=a.max_keypoints) for s in a.seq]
        per_seq[f] = rs
        results[f] = _average(rs)
    print(
        f"HPatches full-image matching on {', '.join(Path(s).name for s in a.seq)} "
        f"(mutual NN, DoG, max {a.max_keypoints} keypoints; H@e = homography accuracy, "
        f"mean corner error <= e px)"
    )
    print(format_table(results))
    for f, why in skipped.items():
        print(f"skipped {f}: {why}")
    out = Path(a.out)
    blob = {
        "seqs": a.seq,
        "max_keypoints": a.max_keypoints,
        "results": results,
        "per_seq": per_seq,
        "skipped": skipped,
    }
    write_json(out / "mma.json", blob, indent=1)
    if results:
        _plot(results, out / "mma.png")
    print(f"wrote {out / 'mma.json'}")
    return blob


if __name__ == "__main__":
    main()
