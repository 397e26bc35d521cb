"""HPatches benchmark (verification, matching, retrieval) and full-image matching accuracy.

    python -m pipelines.hpatches --features sift rootsift hardnet
        [--data datasets/hpatches-release] [--split full] [--outputs outputs/hpatches]
        [--tasks verification matching retrieval] [--synth-seqs 8] [--synth-patches 100]

``--data``: an hpatches-release folder (``<seq>/{ref,e1..e5,h1..h5,t1..t5}.png``, 65x65 patches
resized to 32 with ``cv2.INTER_LINEAR``); task files from ``<data>/../tasks``, generated in
memory (seed 42) when missing; without ``--data`` the synthetic ``datasets/hpatches-synth`` is
written on first use. Protocols: ``descriptors.hpatches_eval`` (L2 on unit descriptors, per
level e / h / t). Numbers are percentages; outputs ``<outputs>/results.json`` and
``<outputs>/hpatches.png``; a descriptor that cannot be loaded is skipped and the exit status
is 1. :func:`full_image_mma` serves ``benchmarks/hpatches_mma.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from descriptors import hpatches_eval as E
from descriptors import registry, tables
from descriptors.data import hpatches as hp
from descriptors.data.hpatches_synth import write_synthetic_hpatches
from descriptors.data.synth import apply_homography
from descriptors.util import atomic_write, setup_logging, write_json
from localize import dog_features, extract_features, match_features, nearest_neighbor
from localize.cli import (
    ArgumentParser,
    InputError,
    cli_errors,
    existing_dir,
    nonneg_int,
    output_dir,
    positive_int,
)
from localize.cli import device as device_arg

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("verification", "matching", "retrieval")

default_conf: dict[str, Any] = {
    "real_data": Path("datasets") / "hpatches-release",
    "synth_root": Path("datasets") / "hpatches-synth",
    "outputs": Path("outputs") / "hpatches",
    "split": "full",
    "synth_seqs": 8,
    "synth_patches": 200,
    "synth_seed": 0,
    "verif_pairs": 100_000,  # rows per verification file when generated on the fly
    "retr_queries": 10_000,  # when generated on the fly
    "retr_distractors": 20_000,
    "batch_size": 1024,
}


# --------------------------------------------------------------------------------------------
# Data resolution
# --------------------------------------------------------------------------------------------


def resolve_data(
    data: str | Path | None,
    synth_root: str | Path | None = None,
    synth_seqs: int = default_conf["synth_seqs"],
    synth_patches: int = default_conf["synth_patches"],
    synth_seed: int = default_conf["synth_seed"],
) -> tuple[Path, bool]:
    """-> (release folder, is_synthetic). Writes the synthetic set on first use."""
    if data is not None:
        p = Path(data)
        if not p.exists():
            raise hp.HPatchesError(f"{p}: hpatches-release folder not found")
        return hp.release_dir(p), (p / "meta.json").exists() or (p.parent / "meta.json").exists()
    real = Path(default_conf["real_data"])
    if real.is_dir():
        return hp.release_dir(real), False
    root = Path(synth_root or default_conf["synth_root"])
    logger.info("no %s: using the synthetic set %s", real, root)
    return write_synthetic_hpatches(root, synth_seqs, synth_patches, synth_seed), True


def load_task_defs(
    release: Path,
    split: str,
    data: dict[str, dict[str, np.ndarray]],
    verif_pairs: int = default_conf["verif_pairs"],
    retr_queries: int = default_conf["retr_queries"],
    retr_distractors: int = default_conf["retr_distractors"],
) -> tuple[dict, list, str]:
    """-> (task rows, test sequences, source) for a split; generated (seed 42) when absent."""
    splits = hp.load_splits(root=release)
    if split not in splits:
        raise hp.HPatchesError(f"{release}: split '{split}' not in {', '.join(sorted(splits))}")
    test = [s for s in splits[split]["test"]]
    missing = [s for s in test if s not in data]
    if missing:
        raise hp.HPatchesError(
            f"{release}: split '{split}' lists missing sequences "
            f"{', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}"
        )
    tdir = hp.tasks_dir_for(release)
    if hp.has_tasks(tdir, split):
        tasks = hp.read_tasks(tdir, split)
        source = str(tdir)
        hp.validate_tasks(tasks, data, tdir, split)
    else:
        logger.info("no task files for split %s in %s: generating them (seed 42)", split, tdir)
        lengths = {s: len(data[s]["ref"]) for s in test}
        total = sum(lengths.values())
        tasks = hp.make_verification_pairs(lengths, test, verif_pairs, seed=42)
        # the benchmark's 10k queries / 20k distractors assume ~190k ref patches; on a smaller
        # set keep queries to a quarter of the patches so distractors remain
        tasks["queries"], tasks["distractors"] = hp.make_retrieval_lists(
            data, test, min(retr_queries, max(1, total // 4)), min(retr_distractors, total), seed=42
        )
        source = "generated (seed 42)"
        hp.validate_tasks(tasks, data)
    return tasks, test, source


# --------------------------------------------------------------------------------------------
# Run + report
# --------------------------------------------------------------------------------------------


def evaluate_feature(
    name: str,
    data: dict,
    tasks: dict,
    test: list[str],
    which: Sequence[str] = TASKS,
    device: str | None = None,
    batch_size: int = default_conf["batch_size"],
    pool_sizes: Sequence[int] = E.POOL_SIZES,
) -> dict[str, Any]:
    """Describe the split's patches with registry ``name`` and run the chosen tasks."""
    ext = registry.load(name, device=device, batch_size=batch_size)
    t0 = time.time()
    descr = E.describe_hpatches({s: data[s] for s in test}, ext)
    t1 = time.time()
    verif = E.eval_verification(descr, tasks) if "verification" in which else None
    matching = E.eval_matching(descr, test) if "matching" in which else None
    retr = (
        E.eval_retrieval(descr, tasks["queries"], tasks["distractors"], pool_sizes)
        if "retrieval" in which
        else None
    )
    return {
        "summary": E.summarize(verif, matching, retr),
        "verification": verif,
        "matching": matching,
        "retrieval": None
        if retr is None
        else {
            "pool_sizes": retr["pool_sizes"],
            "map": {L: {str(k): v for k, v in m.items()} for L, m in retr["map"].items()},
        },
        "dim": int(ext.dim),
        "describe_s": round(t1 - t0, 2),
        "eval_s": round(time.time() - t1, 2),
    }


TABLE_ROWS = (
    ("verification", "verification AP (imbal.)"),
    ("verification_auc", "verification AUC (bal.)"),
    ("matching", "matching mAP"),
    ("retrieval", "retrieval mAP (full pool)"),
)


def _table_rows(summary: dict) -> list[tuple[str, dict]]:
    """(label, row) of one feature: the four task rows; retrieval also per pool size and as
    hpatches-benchmark's mean over pool sizes."""
    rows = []
    for key, label in TABLE_ROWS:
        row = summary.get(key)
        if row is None:
            continue
        if key == "retrieval":
            for k, r in summary.get("retrieval_by_pool", {}).items():
                if int(k) != row["pool_size"]:
                    rows.append((f"  retrieval mAP, pool {k}", r))
            label = f"retrieval mAP (full pool {row['pool_size']})"
            rows.append((label, row))
            if "retrieval_pool_mean" in summary:
                rows.append(("  retrieval, mean of pools", summary["retrieval_pool_mean"]))
            continue
        rows.append((label, row))
    return rows


def format_table(results: dict[str, dict]) -> str:
    """The usual HPatches table: one row per (feature, task), columns Easy Hard Tough mean;
    retrieval per pool size, the full pool (headline) and the benchmark's mean over pools."""
    rows = [
        [feat, label] + [f"{row[c]:.2f}" for c in ("e", "h", "t", "mean")]
        for feat, r in results.items()
        for label, row in _table_rows(r["summary"])
    ]
    return tables.format_table(
        ["feature", "task", "Easy", "Hard", "Tough", "mean"], rows, align="llrrrr"
    )


def plot_results(results: dict[str, dict], path: Path) -> None:
    """Bar chart: one panel per task, grouped bars Easy/Hard/Tough/mean per feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (k, lbl)
        for k, lbl in TABLE_ROWS
        if k != "verification_auc" and any(k in r["summary"] for r in results.values())
    ]
    if not panels or not results:
        return
    feats = list(results)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 3.2 + 0.2 * len(feats)), squeeze=False
    )
    cols = ("e", "h", "t", "mean")
    colors = ("#4c9a2a", "#e0a526", "#c0392b", "#555555")
    w = 0.8 / len(cols)
    for ax, (key, label) in zip(axes[0], panels):
        x = np.arange(len(feats))
        for j, (c, col) in enumerate(zip(cols, colors)):
            vals = [results[f]["summary"].get(key, {}).get(c, np.nan) for f in feats]
            ax.bar(
                x + (j - 1.5) * w,
                vals,
                w,
                color=col,
                label=E.LEVEL_NAMES.get(c, "mean"),
                edgecolor="k",
                linewidth=0.5,
            )
        ax.set_xticks(x)
        ax.set_xticklabels(feats, rotation=20)
        ax.set_ylim(0, 100)
        ax.set_title(label)
        ax.grid(axis="y", linestyle="--", alpha=0.5)
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def run(
    features: Sequence[str],
    data: str | Path | None = None,
    split: str = "full",
    outputs: str | Path = default_conf["outputs"],
    tasks: Sequence[str] = TASKS,
    device: str | None = None,
    synth_root: str | Path | None = None,
    synth_seqs: int = default_conf["synth_seqs"],
    synth_patches: int = default_conf["synth_patches"],
    synth_seed: int = default_conf["synth_seed"],
    pool_sizes: Sequence[int] = E.POOL_SIZES,
    verif_pairs: int = default_conf["verif_pairs"],
) -> dict[str, Any]:
    """Evaluate features on HPatches; writes ``<outputs>/results.json`` and ``hpatches.png``.

    Features that cannot be loaded (missing weights) are skipped with a note in ``skipped``.
    """
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise InputError(f"unknown task(s) {bad}: choose from {', '.join(TASKS)}")
    if not pool_sizes or any(int(n) < 1 for n in pool_sizes):
        raise InputError(f"retrieval pool sizes must be integers >= 1, got {list(pool_sizes)}")
    release, synthetic = resolve_data(data, synth_root, synth_seqs, synth_patches, synth_seed)
    patches = hp.read_hpatches(release)
    task_defs, test, source = load_task_defs(release, split, patches, verif_pairs=verif_pairs)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for f in features:
        try:
            results[str(f)] = evaluate_feature(
                str(f), patches, task_defs, test, tasks, device, pool_sizes=pool_sizes
            )
        except registry.DescriptorError as e:
            logger.warning("skipping %s: %s", f, e)
            skipped[str(f)] = str(e)
    out = {
        "data": str(release),
        "synthetic": synthetic,
        "split": split,
        "n_sequences": len(test),
        "n_patches": int(sum(len(patches[s]["ref"]) for s in test)),
        "tasks_source": source,
        "metrics_impl": "descriptors.metrics",
        "n_verif_pairs": len(task_defs["pos"]),
        "n_queries": len(task_defs["queries"]),
        "n_distractors": len(task_defs["distractors"]),
        "features": results,
        "skipped": skipped,
    }
    outputs = Path(outputs)
    write_json(outputs / "results.json", out, indent=1)
    plot_results(results, outputs / "hpatches.png")
    out["table"] = format_table(results)
    return out


# --------------------------------------------------------------------------------------------
# Full-image matching accuracy (hpatches-sequences layout)
# --------------------------------------------------------------------------------------------

MMA_DEFAULTS: dict[str, Any] = {
    "thresholds": tuple(range(1, 11)),  # px, MMA
    "homography_thresholds": (1, 3, 5),  # px, mean corner error
    "max_keypoints": 2000,
    "ransac_reproj": 3.0,  # cv2.findHomography RANSAC threshold, px
    "max_side": 0,  # 0 = full resolution (D2-Net); N = downscale long side to N
    "match_conf": "nn-mutual",  # localize.match_features conf: mutual nearest neighbours
}


def full_image_mma(
    seq_dir: str | Path,
    extractor_name: Any,
    thresholds: Sequence[float] = MMA_DEFAULTS["thresholds"],
    max_keypoints: int = MMA_DEFAULTS["max_keypoints"],
    homography_thresholds: Sequence[float] = MMA_DEFAULTS["homography_thresholds"],
    ransac_reproj: float = MMA_DEFAULTS["ransac_reproj"],
    max_side: int = MMA_DEFAULTS["max_side"],
    match_conf: str = MMA_DEFAULTS["match_conf"],
    device: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean matching accuracy of image 1 against images 2..N of one sequence.

    Features: ``localize.dog_features``' per-image steps with its defaults (DoG keypoints, strongest
    ``max_keypoints``; patch descriptors, or OpenCV SIFT on the full image for sift / rootsift),
    the image resized so its long side is at most ``max_side`` (0 = full resolution, as D2-Net's
    HPatches-sequences evaluation), keypoints mapped back to original pixels. Matches:
    ``localize.nearest_neighbor.match_descriptors`` with conf ``match_conf`` (default mutual
    nearest neighbours). A match is correct at t px when ``|H_1_k x1 - x2| <= t`` (pixels of image k);
    MMA@t = mean over pairs of the per-pair fraction (D2-Net / R2D2 style). Homography:
    ``cv2.findHomography(RANSAC, ransac_reproj)`` on the matches; mean corner error of the 4
    image-1 corners; accuracy@e = fraction of pairs with error <= e px (SuperPoint style).

    Args:
        seq_dir: folder ``<seq>/{1..6}.(ppm|png)`` + ``H_1_k``.
        extractor_name: registry name / checkpoint path, or an already loaded Extractor.
    Returns:
        {"mma": {t: frac}, "homography_acc": {e: frac}, "pairs": [per-pair dicts],
         "n_keypoints": mean, "n_matches": mean, "feature": name, "detector_scale": [long side
         of the detector image / original long side, per image]}
    """
    cv2.setRNGSeed(seed)
    ext = (
        registry.load(extractor_name, device=device)
        if isinstance(extractor_name, (str, Path))
        else extractor_name
    )
    conf = {
        **extract_features.default_conf,
        "max_keypoints": int(max_keypoints),
        "resize_max": int(max_side) or None,
    }
    mconf = match_features.resolve_conf(match_conf)
    imgs, Hs, names = hp.read_image_sequence(seq_dir)
    feats, scales = [], []
    for im in imgs:
        prep = dog_features.prepare_image(im, conf)
        desc = dog_features.describe(
            prep["small"], prep["kps"], prep["xy"], prep["size"], prep["angle"], ext, conf, device
        )
        f = dog_features.finish_image(prep, desc)
        feats.append((f["keypoints"].astype(np.float64), desc))
        scales.append(max(prep["small"].shape) / max(im.shape))
    h0, w0 = imgs[0].shape
    pairs = []
    for k, H in enumerate(Hs, start=2):
        (xy0, d0), (xyk, dk) = feats[0], feats[k - 1]
        m0, _ = nearest_neighbor.match_descriptors(
            d0,
            dk,
            ratio=mconf["ratio"],
            distance_threshold=mconf["distance_threshold"],
            mutual=mconf["mutual"],
            device="cpu",
        )
        i0 = np.flatnonzero(m0 >= 0)
        p0, pk = xy0[i0], xyk[m0[i0]]
        err = np.linalg.norm(apply_homography(H, p0) - pk, axis=1)
        acc = {float(t): (float(np.mean(err <= t)) if len(i0) else 0.0) for t in thresholds}
        cerr = E.homography_corner_error(
            p0.astype(np.float32), pk.astype(np.float32), H, (h0, w0), ransac_reproj
        )
        pairs.append(
            {
                "pair": f"{names[0]}-{names[k - 1]}",
                "n_matches": int(len(i0)),
                "n_kp": [int(len(xy0)), int(len(xyk))],
                "mma": acc,
                "corner_error": cerr if np.isfinite(cerr) else None,
            }
        )
    return {
        "feature": ext.name,
        "seq": str(seq_dir),
        "detector_scale": scales,
        "match_conf": match_conf,
        "mma": {float(t): float(np.mean([p["mma"][float(t)] for p in pairs])) for t in thresholds},
        "homography_acc": {
            float(e): float(
                np.mean([p["corner_error"] is not None and p["corner_error"] <= e for p in pairs])
            )
            for e in homography_thresholds
        },
        "n_keypoints": float(np.mean([len(f[0]) for f in feats])),
        "n_matches": float(np.mean([p["n_matches"] for p in pairs])),
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=["sift"],
        help="registry names (sift, rootsift, hardnet, ...) or checkpoint paths (default: sift)",
    )
    p.add_argument(
        "--data",
        default=None,
        type=existing_dir,
        help="hpatches-release folder (default: datasets/hpatches-release, else the "
        "synthetic set under --synth-root)",
    )
    p.add_argument(
        "--split",
        default=default_conf["split"],
        help="split name in tasks/splits/splits.json (default: full)",
    )
    p.add_argument(
        "--outputs",
        default=str(default_conf["outputs"]),
        type=output_dir,
        help="folder for results.json and hpatches.png (default: outputs/hpatches)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        choices=TASKS,
        help="benchmark tasks to run (default: all three)",
    )
    p.add_argument(
        "--device",
        default=None,
        type=device_arg,
        help="torch device of the learned descriptors (default: cuda if present)",
    )
    p.add_argument(
        "--synth-root",
        default=str(default_conf["synth_root"]),
        help="where the synthetic set is written on first use (default: datasets/hpatches-synth)",
    )
    p.add_argument(
        "--synth-seqs",
        type=positive_int,
        default=default_conf["synth_seqs"],
        help="sequences of a newly written synthetic set",
    )
    p.add_argument(
        "--synth-patches",
        type=positive_int,
        default=default_conf["synth_patches"],
        help="patches per sequence of a newly written synthetic set",
    )
    p.add_argument(
        "--synth-seed",
        type=nonneg_int,
        default=default_conf["synth_seed"],
        help="seed of a newly written synthetic set",
    )
    p.add_argument(
        "--verif-pairs",
        type=positive_int,
        default=default_conf["verif_pairs"],
        help="rows per verification file when task files must be generated",
    )
    p.add_argument(
        "--pool-sizes",
        type=positive_int,
        nargs="+",
        default=list(E.POOL_SIZES),
        help="retrieval pool sizes (clipped to the available pool)",
    )
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """CLI entry point; exits with status 2 (one line on stderr) on bad arguments or data, or
    when a requested feature could not be loaded (after evaluating and writing the others)."""
    setup_logging()
    a = _parse_args(argv)
    with cli_errors("pipelines.hpatches"):
        out = run(
            a.features,
            a.data,
            a.split,
            a.outputs,
            a.tasks,
            a.device,
            a.synth_root,
            a.synth_seqs,
            a.synth_patches,
            a.synth_seed,
            a.pool_sizes,
            a.verif_pairs,
        )
    print(
        f"HPatches split '{out['split']}' on {out['data']}"
        f"{' (synthetic)' if out['synthetic'] else ''}: {out['n_sequences']} sequences, "
        f"{out['n_patches']} patches; tasks: {out['tasks_source']}"
    )
    print(out["table"])
    for f, why in out["skipped"].items():
        print(f"skipped {f}: {why}")
    print(f"wrote {Path(a.outputs) / 'results.json'} and {Path(a.outputs) / 'hpatches.png'}")
    if out["skipped"]:
        print(
            "pipelines.hpatches: could not load "
            + "; ".join(
                f"{f}: {str(why).splitlines()[0] if why else ''}"
                for f, why in out["skipped"].items()
            ),
            file=sys.stderr,
        )
        raise SystemExit(2)
    return out


if __name__ == "__main__":
    main()
