"""Brown PhotoTour patch benchmark: FPR95 on the m50 pairs and the fracking paper's protocol.

    python -m pipelines.phototour --features sift rootsift hardnet
        [--data datasets/phototour-synth] [--split test] [--out outputs/phototour]
        [--fracking-points 10000] [--fracking-negatives 1000] [--fracking-folds 10] [--seed 0]

``--data``/``--split``: a folder in the Brown layout (``patches*.bmp``, ``info.txt``,
``m50_*.txt``), ``<data>/<split>`` or ``--data`` itself; the default synthetic set is written on
first use. Patches are resized 64 -> 32 (``cv2.INTER_AREA``), distance L2. Protocols
(``descriptors.metrics``): m50 FPR95 (HardNet's ``ErrorRateAt95Recall``) and AP; fracking
(Simo-Serra et al.) PR-AUC at 1:1000, ROC-AUC, CMC, means over folds. Outputs
``<out>/results.json``, ``<out>/pr.png``, ``<out>/roc.png``; a descriptor that cannot be loaded
is skipped and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from descriptors import fracking_protocol as F
from descriptors import metrics as M
from descriptors import tables
from descriptors.data.phototour import PhotoTourError, read_phototour
from descriptors.data.phototour_synth import DEFAULT_SYNTH_ROOT, ensure_synthetic_phototour
from descriptors.phototour_eval import evaluate_phototour
from descriptors.registry import DescriptorError, load
from descriptors.util import atomic_write, setup_logging, write_json
from localize.cli import (
    ArgumentParser,
    cli_errors,
    nonneg_int,
    output_dir,
    positive_int,
)
from localize.cli import (
    device as device_arg,
)

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "data": DEFAULT_SYNTH_ROOT,
    "split": "test",
    "out": "outputs/phototour",
    "features": ["sift", "rootsift", "hardnet"],
    "cmc_negatives": M.CMC_NEGATIVES,
    "fracking_points": F.FRACKING_POINTS,
    "fracking_negatives": F.FRACKING_NEGATIVES,
    "fracking_folds": F.FRACKING_FOLDS,
    "seed": 0,
}


def resolve_folder(data: str | Path, split: str) -> Path:
    """The scene folder to read: ``<data>/<split>``, or ``<data>`` itself if it holds info.txt.

    The default synthetic root is generated when missing; any other missing folder is an error.
    """
    data = Path(data)
    if (data / "info.txt").is_file():
        return data
    folder = data / split
    if not (folder / "info.txt").is_file() and data == Path(default_conf["data"]):
        logger.info("generating the synthetic PhotoTour set in %s (first use)", data)
        ensure_synthetic_phototour(data)
    if not folder.is_dir():
        raise PhotoTourError(f"{folder}: PhotoTour folder not found (pass --data/--split)")
    return folder


def format_table(rows: list[dict]) -> str:
    """Markdown table of the per-descriptor results (m50 columns, then the fracking protocol's,
    1 positive : K negatives); descriptors that failed are listed below it."""
    head = ["descriptor", "dim", "m50 FPR95 %", "m50 AP 1:1"]
    head += ["fracking PR-AUC", "fracking ROC-AUC", "fracking CMC@1", "fracking CMC-AUC", "time s"]
    body = [
        [
            r["name"],
            r["dim"],
            f"{100 * r['m50']['fpr95']:.2f}",
            f"{r['m50']['pr_auc']:.4f}",
            f"{r['fracking']['pr_auc']:.4f}",
            f"{r['fracking']['roc_auc']:.4f}",
            f"{r['fracking']['cmc1']:.3f}",
            f"{r['fracking']['cmc_auc']:.4f}",
            f"{r['seconds']:.1f}",
        ]
        for r in rows
        if "error" not in r
    ]
    errors = [f"{r['name']}: error: {r['error']}" for r in rows if "error" in r]
    return "\n".join([tables.format_table(head, body)] + errors)


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: Path, title: str
) -> list[Path]:
    """Write pr.png and roc.png (matplotlib Agg). ``curves[name] = (distances, labels)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for kind in ("pr", "roc"):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for name, (d, y) in curves.items():
            if kind == "pr":
                prec, rec, _ = M.pr_curve(d, y)
                ax.plot(
                    np.r_[0.0, rec], np.r_[1.0, prec], label=f"{name} (AP {M.pr_auc(d, y):.3f})"
                )
            else:
                fpr, tpr, _ = M.roc_curve(d, y)
                ax.plot(fpr, tpr, label=f"{name} (FPR95 {100 * M.fpr95(d, y):.1f}%)")
        if kind == "pr":
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
        else:
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.axhline(0.95, color="gray", lw=0.5, ls="--")
            ax.set_xscale("symlog", linthresh=1e-2)
            ax.set_xlim(0.0, 1.0)
        ax.set_title(f"{title}: {kind.upper()}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{kind}.png"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def run(
    features: list[str],
    data: str | Path = default_conf["data"],
    split: str = default_conf["split"],
    out: str | Path = default_conf["out"],
    device: str | None = None,
    batch: int = 1024,
    cmc_negatives: int = default_conf["cmc_negatives"],
    plot: bool = True,
    fracking_points: int = default_conf["fracking_points"],
    fracking_negatives: int = default_conf["fracking_negatives"],
    fracking_folds: int = default_conf["fracking_folds"],
    seed: int = default_conf["seed"],
) -> dict:
    """Evaluate descriptors on one PhotoTour folder; write results.json (+ PNGs).

    Args:
        features: registry names or checkpoint paths.
        cmc_negatives: negatives of the m50 CMC (JSON only; drawn from the m50 positives).
        fracking_points, fracking_negatives, fracking_folds, seed: the fracking protocol.
    Returns:
        the results dict written to ``<out>/results.json`` (``errors`` lists the descriptors
        that could not be loaded), plus ``table`` (the plain-text table, not in the JSON).
    Raises:
        PhotoTourError: missing or malformed folder.
    """
    folder = resolve_folder(data, split)
    t0 = time.time()
    dataset = read_phototour(folder)
    logger.info(
        "read %s: %d patches, %d pairs (%s) in %.1fs",
        folder,
        len(dataset),
        len(dataset.matches),
        dataset.pairs_file,
        time.time() - t0,
    )
    if len(dataset.matches) == 0:
        raise PhotoTourError(f"{folder}: no m50_*.txt pairs file to evaluate on")
    try:  # sampled once (seeded): every descriptor sees the same folds
        folds = F.sample_fracking_folds(
            dataset.point_ids, fracking_points, fracking_negatives, fracking_folds, seed
        )
    except ValueError as e:
        raise PhotoTourError(f"{folder / 'info.txt'}: {e}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    fr_meta: dict[str, Any] = {}
    for name in features:
        try:
            ex = load(name, device=device, batch_size=batch)
        except (DescriptorError, FileNotFoundError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            logger.warning("%s: %s (skipped)", name, msg)
            rows.append({"name": name, "error": msg})
            continue
        t = time.time()
        r = evaluate_phototour(
            ex,
            dataset,
            batch=batch,
            n_neg=cmc_negatives,
            seed=seed,
            fracking_points=fracking_points,
            fracking_negatives=fracking_negatives,
            fracking_folds=fracking_folds,
            folds=folds,
            return_arrays=True,
        )
        m50, fr = r["m50"], r["fracking"]
        curves[name] = (m50.pop("distances"), m50.pop("labels"))
        m50.pop("cmc")
        m50["cmc1_note"] = (
            f"1 positive vs up to {cmc_negatives} second patches of the other "
            "m50 positive pairs (not the paper's protocol)"
        )
        fr["cmc"] = [float(v) for v in fr["cmc"]]
        fr_meta = {k: fr[k] for k in ("n_points", "n_negatives", "n_folds", "seed")}
        rows.append(
            {
                "name": name,
                "dim": int(ex.dim),
                "seconds": round(time.time() - t, 2),
                "fpr95": m50["fpr95"],
                "m50": m50,
                "fracking": fr,
            }
        )
    title = f"{folder.parent.name}/{folder.name}"
    plots = [str(p) for p in plot_curves(curves, out, title)] if (plot and curves) else []
    result = {
        "data": str(folder),
        "pairs_file": dataset.pairs_file,
        "n_patches": len(dataset),
        "n_points": dataset.n_points,
        "n_pairs": int(len(dataset.matches)),
        "n_pos": int(dataset.matches[:, 2].sum()),
        "fracking_protocol": fr_meta,
        "metrics": {
            "fpr95": "m50 pairs: HardNet ErrorRateAt95Recall (fraction)",
            "m50.pr_auc": "m50 pairs (balanced 1:1): average precision of -distance",
            "m50.roc_auc": "m50 pairs: ROC AUC",
            "fracking.pr_auc": "Simo-Serra et al. Sec. 4.5: AP of 1 positive vs K random "
            "negatives per point, pooled per fold, mean over folds",
            "fracking.roc_auc": "same sets: ROC AUC (suppl. Sec. 6)",
            "fracking.cmc1": "same sets: fraction of points whose positive ranks first",
            "fracking.cmc_auc": "same sets: mean of the CMC curve over ranks 1..K+1",
        },
        "results": {
            r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows if "error" not in r
        },
        "errors": {r["name"]: r["error"] for r in rows if "error" in r},
        "plots": plots,
    }
    write_json(out / "results.json", result)
    result["title"] = title
    result["table"] = format_table(rows)
    return result


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=list(default_conf["features"]),
        help="registry names (sift, rootsift, hardnet, ...) or checkpoint paths",
    )
    p.add_argument(
        "--data",
        default=default_conf["data"],
        help="PhotoTour root (or a scene folder holding info.txt)",
    )
    p.add_argument(
        "--split",
        default=default_conf["split"],
        help="scene under --data: test/train (synthetic) or liberty/notredame/yosemite",
    )
    p.add_argument(
        "--out",
        "--outputs",
        dest="out",
        default=default_conf["out"],
        type=output_dir,
        help="folder for results.json, pr.png, roc.png (default: outputs/phototour)",
    )
    p.add_argument(
        "--device",
        default=None,
        type=device_arg,
        help="torch device of the learned descriptors (default: cuda if present)",
    )
    p.add_argument("--batch", type=positive_int, default=1024, help="patches per extractor call")
    p.add_argument(
        "--cmc-negatives",
        type=positive_int,
        default=default_conf["cmc_negatives"],
        help="negatives of the m50 CMC@1 (JSON only)",
    )
    p.add_argument(
        "--fracking-points",
        type=positive_int,
        default=default_conf["fracking_points"],
        help="unique 3D points per fold (fracking protocol)",
    )
    p.add_argument(
        "--fracking-negatives",
        type=positive_int,
        default=default_conf["fracking_negatives"],
        help="random non-corresponding patches per point",
    )
    p.add_argument(
        "--fracking-folds",
        type=positive_int,
        default=default_conf["fracking_folds"],
        help="folds of the fracking protocol (default 10)",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=default_conf["seed"],
        help="seed of the fracking sampling (and of the m50 CMC negatives)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write pr.png / roc.png")
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> dict:
    """CLI entry point; exits with status 2 (one line on stderr) on bad arguments or data, or
    when a requested descriptor could not be loaded (after evaluating and writing the others)."""
    setup_logging()
    a = _parse_args(argv)
    with cli_errors("pipelines.phototour"):
        result = run(
            a.features,
            a.data,
            a.split,
            a.out,
            device=a.device,
            batch=a.batch,
            cmc_negatives=a.cmc_negatives,
            plot=not a.no_plot,
            fracking_points=a.fracking_points,
            fracking_negatives=a.fracking_negatives,
            fracking_folds=a.fracking_folds,
            seed=a.seed,
        )
    print(
        f"\nPhotoTour {result['title']}: {result['n_patches']} patches of "
        f"{result['n_points']} 3D points; m50: {result['n_pairs']} pairs ({result['n_pos']} "
        f"matching) from {result['pairs_file']}"
    )
    fr = result["fracking_protocol"]
    if fr:
        print(
            f"fracking protocol: {fr['n_folds']} folds x {fr['n_points']} points x "
            f"(1 positive + {fr['n_negatives']} negatives), seed {fr['seed']}"
        )
    print(result["table"])
    print(f"wrote {Path(a.out) / 'results.json'}")
    if result["errors"]:
        print(
            "pipelines.phototour: could not load "
            + "; ".join(
                f"{k}: {str(v).splitlines()[0] if v else ''}" for k, v in result["errors"].items()
            ),
            file=sys.stderr,
        )
        raise SystemExit(2)
    return result


if __name__ == "__main__":
    main()
