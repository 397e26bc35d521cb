"""Photos -> COLMAP model with any registered local descriptor (hloc's ``pipeline_SfM``).

    python -m pipelines.sfm --images DIR --features sift [--pairs exhaustive|retrieval|sequential]
        [--mapper incremental|global|hierarchical] --outputs OUT [--gt DIR_OR_MODEL] [--viz N]

Stages: extract, pairs (exhaustive; VLAD retrieval over the collection's own RootSIFT;
sequential with loop closure), match, reconstruct (``localize.reconstruction``), and with
``--gt`` evaluate: robust Sim3 alignment to the ground-truth centres, centre error
(ground-truth units, metres for Strecha) and rotation error (degrees) per view, an
unregistered view counting as infinite. Outputs under ``<outputs>/<features tag>/``:
``features.h5``, ``global-feats-vlad.h5``, ``pairs-<pairs>.txt``, ``matches-<pairs>.h5``,
``sfm-<pairs>-<mapper>/`` and ``results-<pairs>-<mapper>.json``, reused while
``fingerprint.json`` is unchanged. Known errors exit 2 with one line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pycolmap

from descriptors import registry
from descriptors.tables import format_table
from descriptors.util import json_default, merge_conf, setup_logging, write_json
from localize import (
    colmap,
    colmap_db,
    colmap_sfm,
    extract_features,
    geometry,
    image_io,
    match_features,
    pairs_from_exhaustive,
    pairs_from_retrieval,
    pairs_from_sequential,
    parsers,
    reconstruction,
    visualization,
)
from localize.cli import ArgumentParser, cli_errors, positive_int
from pipelines.outputs import (
    StageTimer,
    default_matcher,
    features_fingerprint,
    features_tag,
    format_timings,
    images_fingerprint,
    invalidate_outputs,
)

logger = logging.getLogger(__name__)

PAIRS = ("exhaustive", "retrieval", "sequential")

default_conf: dict[str, Any] = {
    "pairs": "exhaustive",
    "mapper": "incremental",
    "num_matched": 10,  # retrieval pairs per image
    "overlap": 10,  # sequential neighbours per frame
    "quadratic_overlap": False,
    "loop_closure": True,  # sequential: retrieval pairs every retrieval_interval frames
    "retrieval_interval": 5,
    "num_loc": 5,  # sequential loop closure: retrieved frames per query frame
    "max_keypoints": None,  # None: localize.extract_features default
    "resize_max": None,  # None: localize.extract_features default
    "matcher": None,  # None: nn-ratio for sift/rootsift, nn-ratio-0.9 otherwise
    "camera_mode": "AUTO",
    "image_options": {},  # pycolmap ImageReaderOptions fields
    "mapper_options": {},  # the mapper's pycolmap options fields
    "min_match_score": None,
    "num_threads": -1,  # COLMAP threads (-1: all cores)
    "seed": 0,  # every COLMAP RANSAC / mapper seed
    "device": None,
    "num_workers": 2,  # extraction prefetch threads; speed only
    "align_max_error": None,  # --gt: Sim3 RANSAC threshold (GT units); None: 5 % of spread
    "overwrite": False,
    "progress": True,
}

#: the reconstruction settings a reused model must share
SFM_KEYS = (
    "mapper",
    "camera_mode",
    "image_options",
    "mapper_options",
    "min_match_score",
    "seed",
    "num_threads",
)


def _resolve_conf(conf: dict[str, Any]) -> dict[str, Any]:
    c = merge_conf(
        default_conf,
        {
            k: v
            for k, v in conf.items()
            if v is not None or k in ("min_match_score", "align_max_error")
        },
        where="sfm",
    )
    if c["pairs"] not in PAIRS:
        raise ValueError(f"pairs {c['pairs']!r}: choose from {', '.join(PAIRS)}")
    if c["mapper"] not in colmap_sfm.MAPPERS:
        raise ValueError(f"mapper {c['mapper']!r}: choose from {', '.join(colmap_sfm.MAPPERS)}")
    colmap_db.camera_mode(c["camera_mode"])
    return c


# ------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------
def read_ground_truth(gt: str | os.PathLike) -> dict[str, pycolmap.Rigid3d]:
    """name -> world-to-camera pose from a Strecha ``gt_dense_cameras`` folder (``*.camera``)
    or a COLMAP model folder (its registered images)."""
    gt = Path(gt)
    if gt.is_dir() and any(gt.glob("*.camera")):
        from localize.data.strecha import read_strecha_cameras

        _, images = read_strecha_cameras(gt)
        return {im["name"]: geometry.qt_to_rigid(im["qvec_wxyz"], im["tvec"]) for im in images}
    if not gt.exists():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    rec = colmap.read_model(gt)
    return {im.name: im.cam_from_world() for im in rec.images.values() if im.has_pose}


def centre_auc(errors: Sequence[float], threshold: float) -> float:
    """Area under the recall-vs-error curve up to ``threshold``, divided by it (1 = every error
    0); infinite errors (unregistered views) count in the denominator only."""
    e = np.sort(np.asarray(errors, np.float64))
    n = len(e)
    if n == 0:
        return 0.0
    recall = np.arange(1, n + 1) / n
    e, recall = np.r_[0.0, e], np.r_[0.0, recall]
    k = np.searchsorted(e, threshold)
    x = np.r_[e[:k], threshold]
    y = np.r_[recall[:k], recall[k - 1]]
    return float(np.trapezoid(y, x) / threshold)


def evaluate_model(
    rec: pycolmap.Reconstruction | None,
    gt: dict[str, pycolmap.Rigid3d],
    max_error: float | None = None,
) -> dict[str, Any]:
    """Sim3-align ``rec`` to the ground-truth centres, then per-view errors (see the module
    docstring). Returns {``align_max_error``, ``aligned`` (bool), ``scale``, ``per_view``
    {name: [centre error, rotation error deg]} (inf when unregistered or not aligned),
    ``within_5cm_1deg``, ``within_25cm_2deg`` (shares of ALL ground-truth views),
    ``auc_10cm``, ``median_centre_error``, ``num_gt``, ``num_registered_gt``}."""
    centres = {n: geometry.camera_center(p) for n, p in gt.items()}
    C = np.stack(list(centres.values()))
    if max_error is None:
        max_error = 0.05 * float(np.median(np.linalg.norm(C - C.mean(0), axis=1)))
    per_view = {n: [float("inf"), float("inf")] for n in gt}
    sim = None
    if rec is not None:
        sim = colmap_sfm.align_to_centers(rec, centres, max_error)
    n_reg = 0
    if sim is not None:
        aligned = pycolmap.Reconstruction(rec)
        aligned.transform(sim)
        for im in aligned.images.values():
            if im.has_pose and im.name in gt:
                n_reg += 1
                q, t = geometry.rigid_to_qt(im.cam_from_world())
                qg, tg = geometry.rigid_to_qt(gt[im.name])
                per_view[im.name] = list(geometry.pose_error(q, t, qg, tg))
    err = np.array([v[0] for v in per_view.values()])
    rot = np.array([v[1] for v in per_view.values()])
    return {
        "align_max_error": max_error,
        "aligned": sim is not None,
        "scale": float(sim.scale) if sim is not None else None,
        "num_gt": len(gt),
        "num_registered_gt": n_reg,
        "within_5cm_1deg": float(np.mean((err <= 0.05) & (rot <= 1.0))),
        "within_25cm_2deg": float(np.mean((err <= 0.25) & (rot <= 2.0))),
        "auc_10cm": centre_auc(err, 0.10),
        "median_centre_error": float(np.median(err)),
        "median_rotation_error_deg": float(np.median(rot)),
        "per_view": per_view,
    }


# ------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------
def _make_pairs(
    c: dict[str, Any],
    names: list[str],
    root: Path,
    features: Path,
    pairs_path: Path,
    image_dir: Path,
    image_list: list[str] | None,
) -> str:
    """Write the pairs file; returns how the pairs were found."""
    if c["pairs"] == "exhaustive":
        pairs_from_exhaustive.main(pairs_path, names)
        return f"exhaustive ({len(names)} images)"
    gconf = {**extract_features.confs["vlad"]}
    gpath = extract_features.main(gconf, image_dir, root, image_list=image_list, device=c["device"])
    if c["pairs"] == "retrieval":
        pairs_from_retrieval.main(
            gpath, pairs_path, num_matched=c["num_matched"], query_list=names, db_list=names
        )
        return f"retrieval top {c['num_matched']} (VLAD k={gconf['num_words']} on rootsift)"
    pairs_from_sequential.main(
        pairs_path,
        names,
        overlap=c["overlap"],
        quadratic_overlap=c["quadratic_overlap"],
        loop_closure=c["loop_closure"],
        retrieval_path=gpath,
        retrieval_interval=c["retrieval_interval"],
        num_loc=c["num_loc"],
    )
    return f"sequential overlap {c['overlap']}" + (
        f" + loop closure every {c['retrieval_interval']} frames top {c['num_loc']}"
        if c["loop_closure"]
        else ""
    )


def _reusable_model(sfm_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The statistics of a complete earlier run with the same settings, else None."""
    f = sfm_dir / "settings.json"
    stats = sfm_dir / reconstruction.STATS_FILE
    if not (f.is_file() and stats.is_file()):
        return None
    try:
        same = json.loads(f.read_text()) == json.loads(json.dumps(settings, default=json_default))
        s = json.loads(stats.read_text())
    except json.JSONDecodeError:
        return None
    if not same or (s.get("num_reg_images", 0) and not (sfm_dir / "images.bin").is_file()):
        return None
    return s


def run(
    images: str | os.PathLike,
    features: str | os.PathLike,
    outputs: str | os.PathLike = "outputs/sfm",
    gt: str | os.PathLike | None = None,
    image_list: Sequence[str] | str | os.PathLike | None = None,
    **conf: Any,
) -> dict:
    """Run the whole pipeline; returns the dict also written to ``results-<pairs>-<mapper>.json``.

    Args:
        images: image folder (names relative to it).
        features: registered descriptor name or checkpoint path.
        outputs: output root; this run writes to ``<outputs>/<features tag>/``.
        gt: Strecha ``gt_dense_cameras`` folder or COLMAP model for :func:`evaluate_model`.
        image_list: names (or a list file) instead of every image of the folder; for
            ``pairs='sequential'`` its order is the capture order (default: sorted names).
        conf: overrides of :data:`default_conf`.
    Returns:
        {"features", "images", "out_dir", "paths" (features, pairs, matches, sfm, results),
        "conf", "pairs_method", "num_images", "num_pairs", "reconstruction" (statistics of
        ``localize.reconstruction.run``), "reused_model", "timings" / "cpu_timings" (s per
        stage), "evaluation" (or None)}.
    """
    c = _resolve_conf(conf)
    features = str(features)
    image_dir = Path(images)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    gt_poses = read_ground_truth(gt) if gt is not None else None
    extractor = registry.load(
        features, device=c["device"], batch_size=extract_features.default_conf["batch_size"]
    )
    ext_conf: dict[str, Any] = {"descriptor": features}
    for k in ("max_keypoints", "resize_max"):
        if c[k] is not None:
            ext_conf[k] = c[k]
    ext_conf = extract_features.resolve_conf(ext_conf)
    matcher = c["matcher"] or default_matcher(features)
    names = extract_features.list_images(image_dir, image_list)
    if len(names) < 2:
        raise colmap.ColmapError(f"{image_dir}: SfM needs at least two images, found {len(names)}")
    prints = extract_features.image_fingerprints(image_dir, names)
    missing = [n for n in names if n not in prints]
    if missing:
        raise image_io.ImageReadError(f"{image_dir / missing[0]}: cannot read image")

    tag = features_tag(features)
    root = Path(outputs) / tag
    pairs_name = (
        c["pairs"]
        if c["pairs"] == "exhaustive"
        else (
            f"retrieval{c['num_matched']}"
            if c["pairs"] == "retrieval"
            else f"sequential{c['overlap']}"
            + ("q" if c["quadratic_overlap"] else "")
            + (f"-loop{c['retrieval_interval']}x{c['num_loc']}" if c["loop_closure"] else "")
        )
    )
    paths = {
        "features": root / "features.h5",
        "pairs": root / f"pairs-{pairs_name}.txt",
        "matches": root / f"matches-{pairs_name}.h5",
        "sfm": root / f"sfm-{pairs_name}-{c['mapper']}",
        "results": root / f"results-{pairs_name}-{c['mapper']}.json",
        "fingerprint": root / "fingerprint.json",
    }

    invalidate_outputs(
        SimpleNamespace(root=root, fingerprint=paths["fingerprint"]),
        {
            "features": features_fingerprint(features),
            "dataset": images_fingerprint(prints),
            "extract": {k: ext_conf[k] for k in sorted(ext_conf) if k != "output"},
            "matcher": matcher,
        },
        c["overwrite"],
    )
    stage = StageTimer()
    with stage("extract"):
        extract_features.main(
            ext_conf,
            image_dir,
            feature_path=paths["features"],
            image_list=names,
            device=c["device"],
            extractor=extractor,
            fingerprints=prints,
            num_workers=c["num_workers"],
        )
    with stage("pairs"):
        if paths["pairs"].is_file():
            pairs_method = f"cached {paths['pairs'].name}"
        else:
            pairs_method = _make_pairs(
                c, names, root, paths["features"], paths["pairs"], image_dir, names
            )
        num_pairs = len(parsers.parse_pairs(paths["pairs"]))
    with stage("match"):
        match_features.main(matcher, paths["pairs"], paths["features"], matches=paths["matches"])
    settings = {**{k: c[k] for k in SFM_KEYS}, "pairs": pairs_name, "names": names}
    with stage("reconstruct"):
        stats = _reusable_model(paths["sfm"], settings)
        reused = stats is not None
        if reused:
            rec = colmap.read_model(paths["sfm"]) if stats["num_reg_images"] else None
        else:
            rec, stats = reconstruction.run(
                paths["sfm"],
                image_dir,
                paths["pairs"],
                paths["features"],
                paths["matches"],
                c["camera_mode"],
                min_match_score=c["min_match_score"],
                image_list=names,
                image_options=c["image_options"],
                mapper_options=c["mapper_options"],
                mapper=c["mapper"],
                overwrite=True,
                num_threads=c["num_threads"],
                random_seed=c["seed"],
                progress=c["progress"],
            )
            write_json(paths["sfm"] / "settings.json", settings)
    evaluation = None
    if gt_poses is not None:
        with stage("evaluate"):
            unknown = [n for n in gt_poses if n not in set(names)]
            if len(unknown) == len(gt_poses):
                raise ValueError(
                    f"{gt}: no ground-truth image is among the images of "
                    f"{image_dir} (e.g. {unknown[0]!r})"
                )
            evaluation = evaluate_model(
                rec, {n: p for n, p in gt_poses.items() if n in set(names)}, c["align_max_error"]
            )
    summary = {
        "features": features,
        "images": str(image_dir),
        "out_dir": str(root),
        "paths": {k: str(v) for k, v in paths.items()},
        "conf": {**c, "matcher": matcher, "extract": {k: ext_conf[k] for k in sorted(ext_conf)}},
        "pairs_method": pairs_method,
        "num_images": len(names),
        "num_pairs": num_pairs,
        "reconstruction": stats,
        "reused_model": reused,
        "timings": stage.wall,
        "cpu_timings": stage.cpu,
        "evaluation": evaluation,
    }
    write_json(paths["results"], summary)
    return summary


def map_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(image folder, model folder) of a finished run, from its ``results-*.json`` or its
    ``sfm-*`` model folder (whose sibling results file names the images).

    Raises:
        FileNotFoundError / ColmapError naming the path when it is not such a run or its model
        is missing (0 registered images).
    """
    path = Path(path)
    results = path
    if path.is_dir():
        if not path.name.startswith("sfm-"):
            raise colmap.ColmapError(f"{path}: not a pipelines.sfm model folder (sfm-*)")
        results = path.parent / f"results-{path.name[len('sfm-') :]}.json"
    if not results.is_file():
        raise FileNotFoundError(f"pipelines.sfm results not found: {results}")
    try:
        s = json.loads(results.read_text())
        images, model = Path(s["images"]), Path(s["paths"]["sfm"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise colmap.ColmapError(f"{results}: not a pipelines.sfm results file") from None
    if not (model / "images.bin").is_file():
        reg = (s.get("reconstruction") or {}).get("registered", "nothing registered")
        raise colmap.ColmapError(f"{model}: no model ({reg})")
    return images, model


def format_summary(s: dict) -> str:
    """The text the CLI prints: counts, accuracy against the ground truth, stage times."""
    r = s["reconstruction"]
    lines = [
        f"features {s['features']} | {s['images']} | {s['num_images']} images, "
        f"{s['num_pairs']} pairs ({s['pairs_method']}) | {r['mapper']} mapper"
        + (" (reused model)" if s.get("reused_model") else ""),
        f"{r['registered']}; {r['num_points3D']} 3D points, mean track length "
        f"{r['mean_track_length']:.2f}, mean reprojection error "
        f"{r['mean_reprojection_error_px']:.3f} px; {r['num_models']} model(s) "
        f"{r['model_sizes']}; {r['num_pairs_verified']} of {r['num_pairs']} pairs verified",
    ]
    e = s.get("evaluation")
    if e:
        lines.append(
            f"vs ground truth ({e['num_gt']} views, Sim3 on centres, inlier threshold "
            f"{e['align_max_error']:.3g}): (5 cm, 1 deg) {100 * e['within_5cm_1deg']:.0f} %, "
            f"(25 cm, 2 deg) {100 * e['within_25cm_2deg']:.0f} %, AUC@10cm "
            f"{100 * e['auc_10cm']:.1f}, median centre error {e['median_centre_error']:.3f}, "
            f"median rotation error {e['median_rotation_error_deg']:.2f} deg"
        )
        lines.append(
            format_table(
                ["view", "centre err", "rot err (deg)"],
                [[n, f"{dt:.3f}", f"{dr:.2f}"] for n, (dt, dr) in e["per_view"].items()],
            )
        )
    lines.append(format_timings(s["timings"], s.get("cpu_timings")))
    lines.append(f"model: {s['paths']['sfm']}\nsummary: {s['paths']['results']}")
    return "\n".join(lines)


def visualize(summary: dict, n: int, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """PNGs of the first ``n`` registered images, each coloured by visibility, track length and
    depth (``localize.visualization.visualize_sfm_2d``). Default folder ``<out_dir>/viz``."""
    sfm = Path(summary["paths"]["sfm"])
    out = Path(out_dir or Path(summary["out_dir"]) / "viz")
    if not (sfm / "images.bin").is_file():
        return []
    rec = colmap.read_model(sfm)
    ids = sorted(colmap.registered_image_ids(rec))[:n]
    files = []
    for color_by in visualization.SFM_COLORINGS:
        figs = visualization.visualize_sfm_2d(rec, summary["images"], color_by, selected=ids)
        for iid, fig in zip(ids, figs):
            name = Path(rec.images[iid].name).stem
            files.append(visualization.save_plot(out / f"sfm_{color_by}_{name}.png", fig))
    return files


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="image folder (unposed photos)")
    p.add_argument(
        "--features",
        required=True,
        help="registered descriptor name (sift, rootsift, hardnet, ...) or checkpoint",
    )
    p.add_argument("--outputs", default="outputs/sfm", help="output root")
    p.add_argument("--pairs", default="exhaustive", choices=PAIRS)
    p.add_argument("--mapper", default="incremental", choices=colmap_sfm.MAPPERS)
    p.add_argument("--image_list", help="image list file (capture order for sequential pairs)")
    p.add_argument("--gt", help="Strecha gt_dense_cameras folder or COLMAP model to score against")
    p.add_argument("--num_matched", type=positive_int, help="retrieval pairs per image")
    p.add_argument("--overlap", type=positive_int, help="sequential neighbours per frame")
    p.add_argument(
        "--no_loop_closure",
        action="store_true",
        help="sequential pairs without retrieval loop closure",
    )
    p.add_argument("--max_keypoints", type=positive_int, help="DoG keypoints per image")
    p.add_argument("--resize_max", type=positive_int, help="longer image side seen by the detector")
    p.add_argument("--matcher", help="localize.match_features conf name")
    p.add_argument("--camera_mode", default="AUTO", choices=colmap_db.CAMERA_MODES)
    p.add_argument("--num_threads", type=int, default=-1, help="COLMAP threads (-1: all)")
    p.add_argument("--seed", type=int, default=0, help="COLMAP RANSAC / mapper seed")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="recompute everything")
    p.add_argument("--verbose", action="store_true", help="keep COLMAP's INFO log lines")
    p.add_argument(
        "--viz",
        type=positive_int,
        metavar="N",
        help="pictures of the first N registered images (<outputs>/<features>/viz)",
    )
    a = p.parse_args(argv)
    setup_logging()
    colmap.set_verbose(a.verbose)
    with cli_errors("pipelines.sfm"):
        s = run(
            a.images,
            a.features,
            a.outputs,
            gt=a.gt,
            image_list=a.image_list,
            pairs=a.pairs,
            mapper=a.mapper,
            num_matched=a.num_matched,
            overlap=a.overlap,
            loop_closure=not a.no_loop_closure,
            max_keypoints=a.max_keypoints,
            resize_max=a.resize_max,
            matcher=a.matcher,
            camera_mode=a.camera_mode,
            num_threads=a.num_threads,
            seed=a.seed,
            device=a.device,
            overwrite=a.overwrite,
        )
        if a.viz:
            s["viz"] = [str(f) for f in visualize(s, a.viz)]
    print(format_summary(s))
    if a.viz:
        print(f"{len(s['viz'])} pictures in {Path(s['out_dir']) / 'viz'}")
    return s


if __name__ == "__main__":
    main()
