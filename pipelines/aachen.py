"""hloc-style Aachen Day-Night v1.1 localization with any registered local descriptor.

    python -m pipelines.aachen --features hndesc [--dataset datasets/aachen_v1.1]
        [--outputs outputs/aachen] [--num_covis 20] [--num_loc 10] [--max_keypoints N] [--viz N]

Stages, as hloc's ``pipelines/Aachen_v1_1/pipeline.py`` (:func:`run`): extract, db-db pairs
(covisibility, or poses when the model has no 3D points), query-db pairs (VLAD retrieval, or
exhaustive on small maps), match, triangulate with fixed poses, localize, evaluate (when
``queries/ground_truth_poses.txt`` exists). Without ``--dataset`` (and no
``datasets/aachen_v1.1``) the synthetic scene ``datasets/aachen-synth`` is rendered.
``--features``: a registered descriptor name or a checkpoint path. Outputs:
``<outputs>/<features tag>/`` (:class:`Outputs`), reused while ``fingerprint.json`` is
unchanged, under the lock ``<outputs>/<features tag>.lock``; known errors exit 2 with one line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from descriptors import registry
from descriptors.util import merge_conf, setup_logging, write_json
from localize import (
    colmap,
    extract_features,
    h5,
    image_io,
    io,
    match_features,
    pairs_from_covisibility,
    pairs_from_exhaustive,
    pairs_from_poses,
    pairs_from_retrieval,
    parsers,
    retrieve,
    run_pictures,
)
from localize import evaluate as ev
from localize import localize_sfm as loc
from localize import triangulation as tri
from localize.cli import (
    ArgumentParser,
    cli_errors,
    existing_dir,
    output_dir,
    positive_int,
)
from localize.cli import (
    device as device_arg,
)
from localize.data.aachen import SYNTHETIC_PRESETS, AachenData, ensure_synthetic_aachen, read_aachen
from localize.geometry import rigid_to_qt
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

default_conf: dict[str, Any] = {
    "num_covis": 20,  # db-db pairs per db image for triangulation
    "num_loc": 50,  # retrieved db images per query (hloc's top-50 for Aachen)
    "query_pairs": "auto",  # 'exhaustive' (every query x every db image), 'retrieval'
    # (top num_loc), 'auto': exhaustive up to exhaustive_max_db
    "exhaustive_max_db": 100,  # db images up to which 'auto' matches queries exhaustively
    "max_keypoints": None,  # None: localize.extract_features default
    "resize_max": None,  # None: localize.extract_features default
    "contrast_stretch": None,  # None: localize.extract_features default (off)
    "matcher": None,  # None: nn-ratio for sift/rootsift, nn-ratio-0.9 otherwise
    "pose_pairs_max_angle_deg": 60.0,  # pose-based db pairs: max viewing-direction angle
    "device": None,
    "num_workers": 2,  # extraction threads decoding + detecting ahead; speed only
    "overwrite": False,  # delete <outputs>/<tag> first
    "localization": {},  # localize.localize_sfm.default_conf overrides
    "triangulation": {},  # localize.triangulation.default_conf overrides
    "synthetic": "default",  # synthetic scene preset when --dataset is absent
    # (localize.data.aachen.SYNTHETIC_PRESETS)
}

SYNTH_ROOT = Path("datasets") / "aachen-synth"
REAL_ROOT = Path("datasets") / "aachen_v1.1"
STAGES = ("extract_db", "extract_query", "pairs", "match", "triangulate", "localize")
QUERY_PAIRS = ("auto", "exhaustive", "retrieval")


# ------------------------------------------------------------------------------------------
# Names, paths, settings
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """Every file of one run, under ``root = <outputs>/<features tag>`` (hloc's path block)."""

    root: Path
    features: Path
    global_features: Path
    vocabulary: Path
    pairs_db: Path
    pairs_query: Path
    matches_db: Path
    matches_query: Path
    sfm: Path
    results: Path
    fingerprint: Path
    summary: Path

    @classmethod
    def at(cls, root: Path, tag: str, num_covis: int, query_pairs: str) -> "Outputs":
        """``query_pairs``: the query pairs' file-name part, ``exhaustive`` or
        ``retrieval<num_loc>``."""
        return cls(
            root=root,
            features=root / "features.h5",
            global_features=root / "global-features.h5",
            vocabulary=root / "vocabulary.npz",
            pairs_db=root / f"pairs-db-covis{num_covis}.txt",
            pairs_query=root / f"pairs-query-{query_pairs}.txt",
            matches_db=root / "matches-db.h5",
            matches_query=root / "matches-query.h5",
            sfm=root / "sfm",
            results=root / f"Aachen-v1.1_{tag}_results.txt",
            fingerprint=root / "fingerprint.json",
            summary=root / "results.json",
        )

    def as_dict(self) -> dict[str, str]:
        """Every path as a string, plus both localization logs (``logs``, ``hloc_logs``)."""
        out = {k: str(v) for k, v in dataclasses.asdict(self).items()}
        out["logs"] = str(loc.logs_path_for(self.results))
        out["hloc_logs"] = str(loc.hloc_logs_path(self.results))
        return out


def _resolve_conf(conf: dict[str, Any]) -> dict[str, Any]:
    conf = merge_conf(default_conf, conf, where="pipeline")
    if conf["query_pairs"] not in QUERY_PAIRS:
        raise ValueError(
            f"query_pairs must be auto, exhaustive or retrieval, got {conf['query_pairs']!r}"
        )
    return conf


def _extract_conf(features: str, conf: dict[str, Any]) -> dict[str, Any]:
    ext_conf: dict[str, Any] = {"descriptor": features}
    for k in ("max_keypoints", "resize_max", "contrast_stretch"):
        if conf[k] is not None:
            ext_conf[k] = conf[k]
    return extract_features.resolve_conf(ext_conf)


def _exhaustive_queries(conf: dict[str, Any], num_db: int) -> bool:
    return conf["query_pairs"] == "exhaustive" or (
        conf["query_pairs"] == "auto" and num_db <= conf["exhaustive_max_db"]
    )


# ------------------------------------------------------------------------------------------
# Fingerprints and output invalidation
# ------------------------------------------------------------------------------------------
def image_fingerprints(data: AachenData) -> dict[str, str]:
    """{image name: ``image_io.image_fingerprint``} of every db and query image of the dataset; also
    what extraction stores with each entry."""
    names = list(dict.fromkeys(list(data.db_names) + [n for n, _ in data.queries]))
    prints = extract_features.image_fingerprints(data.image_dir, names)
    missing = [n for n in names if n not in prints]
    if missing:
        raise image_io.ImageReadError(
            f"{len(missing)} dataset images cannot be read, e.g. "
            f"{Path(data.image_dir) / missing[0]}"
        )
    return prints


def _dataset_fingerprint(root: Path, data: AachenData, prints: dict[str, str]) -> dict:
    """What identifies the dataset's content: a digest of every db / query image fingerprint
    (size, mtime_ns, head+tail hash), the reference model files and the query lists (same
    fingerprint), the synthetic config. Not the dataset's path."""
    out: dict[str, Any] = images_fingerprint(prints)
    cfg = root / "synthetic_config.json"
    if cfg.is_file():
        out["synthetic_config"] = cfg.read_text()
    files = sorted(p for p in Path(data.reference_model).iterdir() if p.is_file())
    files += [Path(p) for p in data.query_lists]
    out["files"] = {
        str(p.relative_to(root) if p.is_relative_to(root) else p): image_io.image_fingerprint(p)
        for p in files
    }
    return out


# ------------------------------------------------------------------------------------------
# Stage helpers
# ------------------------------------------------------------------------------------------
def db_pairs(
    reference: Any, data: AachenData, conf: dict[str, Any]
) -> tuple[list[tuple[str, str]], str]:
    """db-db pairs for triangulation and how they were found (covisibility when the reference
    model has 3D points, else from the poses)."""
    if reference.num_points3D() > 0:
        pairs = pairs_from_covisibility.from_covisibility(reference, conf["num_covis"])
        method = "covisibility"
    else:
        pairs = pairs_from_poses.from_poses(
            reference, conf["num_covis"], conf["pose_pairs_max_angle_deg"]
        )
        method = "poses (reference model has no 3D points)"
    if not pairs:
        raise colmap.ColmapError(f"{data.reference_model}: no db-db pairs for triangulation")
    return pairs, method


def retrieval_pairs(
    outputs: Outputs, query_names: list[str], db_names: list[str], num_loc: int
) -> tuple[list[tuple[str, str]], str]:
    """Query-db retrieval pairs (best first) and how they were found.

    VLAD over a k-means vocabulary learned on the DATABASE images' descriptors only (the map, as
    a deployed system would; queries never enter it); every image is encoded and
    ``pairs.from_retrieval`` ranks db images per query. A global-features file that already
    holds every image is reused (outputs are deleted whenever features / dataset / settings
    change, so it is current).
    """
    gpath = outputs.global_features
    if gpath.is_file() and set(query_names + db_names) <= set(io.list_h5_names(gpath)):
        method = "cached " + gpath.name
    else:
        conf = retrieve.resolve_conf(None)
        vocab = retrieve.learn_vocabulary_from_features(
            outputs.features, conf, names=db_names, out_path=outputs.vocabulary
        )
        retrieve.main(outputs.features, vocab, gpath, names=query_names + db_names, conf=conf)
        method = f"localize.retrieve VLAD (k={conf['num_words']}, vocabulary from db images)"
    pairs = pairs_from_retrieval.from_retrieval(
        gpath, num_loc, query_prefix=None, query_list=query_names, db_prefix=None, db_list=db_names
    )
    return pairs, method


def _ranked(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for q, d in pairs:
        out.setdefault(q, []).append(d)
    return out


def evaluate_run(
    results: Path, data: AachenData, reference: Any, ranked: dict[str, list[str]], tag: str
) -> tuple[dict | None, str | None, dict | None]:
    """(evaluate() output, its table, retrieval recall@1/5/10 per condition); all None when the
    dataset has no ground truth (the real Aachen)."""
    if not data.ground_truth:
        return None, None, None
    evaluation = ev.evaluate(results, data.ground_truth, data.query_condition)
    db_poses = {im.name: rigid_to_qt(im.cam_from_world()) for im in reference.images.values()}
    recall = {}
    for cond in ("day", "night"):
        gt = {q: p for q, p in data.ground_truth.items() if data.query_condition[q] == cond}
        recall[cond] = ev.retrieval_recall(ranked, gt, db_poses, ks=(1, 5, 10))
    return evaluation, ev.format_table({tag: evaluation}), recall


def resolve_dataset(dataset: str | os.PathLike | None, synthetic: str = "default") -> Path:
    """The dataset root to use.

    ``dataset`` given: it must exist (a mistyped path is an error, never a silent switch to the
    synthetic scene). ``None``: the real ``datasets/aachen_v1.1`` when present, else the
    synthetic scene of preset ``synthetic`` (``localize.data.aachen.SYNTHETIC_PRESETS``),
    generated on first use and said once (warning).

    Raises:
        FileNotFoundError: ``dataset`` is given and does not exist.
    """
    if dataset is not None:
        if not Path(dataset).exists():
            raise FileNotFoundError(
                f"dataset {dataset} not found (omit --dataset for the synthetic scene)"
            )
        return Path(dataset)
    if REAL_ROOT.exists():
        return REAL_ROOT
    if synthetic not in SYNTHETIC_PRESETS:
        raise ValueError(
            f"unknown synthetic preset '{synthetic}' (known: {', '.join(SYNTHETIC_PRESETS)})"
        )
    synth_root = (
        SYNTH_ROOT
        if synthetic == "default"
        else SYNTH_ROOT.with_name(f"{SYNTH_ROOT.name}-{synthetic}")
    )
    logger.warning(
        "no --dataset and no %s: using the synthetic Aachen scene at %s", REAL_ROOT, synth_root
    )
    return Path(ensure_synthetic_aachen(synth_root, **SYNTHETIC_PRESETS[synthetic]))


# ------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------
def run(
    features: str | os.PathLike,
    dataset: str | os.PathLike | None = None,
    outputs: str | os.PathLike = "outputs/aachen",
    **conf: Any,
) -> dict:
    """Run the whole pipeline; returns the dict also written to ``<out>/results.json``.

    Args:
        features: registered descriptor name or checkpoint path.
        dataset: Aachen-layout root (must exist); None: ``datasets/aachen_v1.1`` if present,
            else the synthetic scene (:func:`resolve_dataset`).
        outputs: output root; this run writes to ``<outputs>/<features tag>/``.
        conf: overrides of :data:`default_conf`.
    Returns:
        {"features", "dataset", "synthetic", "out_dir", "results_path", "logs_path", "paths"
        (:meth:`Outputs.as_dict`), "conf", "timings" / "cpu_timings" (s per stage), "num_db",
        "num_queries", "triangulation" (stats), "localization" (summary), "failures",
        "evaluation" (evaluate() output without per_query, or None), "per_query", "table"}.
    """
    conf = _resolve_conf(conf)
    features = str(features)
    # a bad descriptor name / checkpoint fails here (one-line DescriptorError), before any work
    extractor = registry.load(
        features, device=conf["device"], batch_size=extract_features.default_conf["batch_size"]
    )
    tag = features_tag(features)
    with h5.run_lock(Path(outputs) / tag):  # a second run on these outputs: one line, now
        dataset = resolve_dataset(dataset, conf["synthetic"])
        data = read_aachen(dataset)
        ext_conf = _extract_conf(features, conf)
        matcher = conf["matcher"] or default_matcher(features)
        exhaustive_q = _exhaustive_queries(conf, len(data.db_names))
        return _run(
            features, dataset, outputs, conf, extractor, data, ext_conf, matcher, exhaustive_q, tag
        )


def _run(
    features: str,
    dataset: Path,
    outputs: str | os.PathLike,
    conf: dict[str, Any],
    extractor: Any,
    data: Any,
    ext_conf: dict[str, Any],
    matcher: str,
    exhaustive_q: bool,
    tag: str,
) -> dict:
    """:func:`run` once its output folder is locked."""
    out = Outputs.at(
        Path(outputs) / tag,
        tag,
        conf["num_covis"],
        "exhaustive" if exhaustive_q else f"retrieval{conf['num_loc']}",
    )
    prints = image_fingerprints(data)
    invalidate_outputs(
        out,
        {
            "features": features_fingerprint(features),
            "dataset": _dataset_fingerprint(dataset, data, prints),
            "extract": {k: ext_conf[k] for k in sorted(ext_conf) if k != "output"},
            "matcher": matcher,
            **{
                k: conf[k]
                for k in (
                    "num_covis",
                    "num_loc",
                    "query_pairs",
                    "exhaustive_max_db",
                    "pose_pairs_max_angle_deg",
                    "triangulation",
                )
            },
        },
        conf["overwrite"],
    )
    query_names = data.query_names
    stage = StageTimer()

    with stage("extract_db"):
        extract_features.main(
            ext_conf,
            data.image_dir,
            feature_path=out.features,
            image_list=data.db_names,
            device=conf["device"],
            extractor=extractor,
            fingerprints=prints,
            num_workers=conf["num_workers"],
        )
    with stage("extract_query"):
        extract_features.main(
            ext_conf,
            data.image_dir,
            feature_path=out.features,
            image_list=query_names,
            device=conf["device"],
            extractor=extractor,
            fingerprints=prints,
            num_workers=conf["num_workers"],
        )
    with stage("pairs"):
        reference = colmap.read_model(data.reference_model)  # the one read of the model
        pairs_db, db_pairs_method = db_pairs(reference, data, conf)
        parsers.write_pairs(out.pairs_db, pairs_db)
        pairs_ret: list[tuple[str, str]] = []
        retrieval_method = "none (exhaustive query pairs, no ground truth to rank against)"
        if not exhaustive_q or data.ground_truth:  # retrieval only when used or reported
            pairs_ret, retrieval_method = retrieval_pairs(
                out, query_names, data.db_names, conf["num_loc"]
            )
        pairs_query = pairs_ret
        if exhaustive_q:
            pairs_query = pairs_from_exhaustive.exhaustive(query_names, data.db_names)
            if pairs_ret:
                retrieval_method += (
                    f" (ranking reported only; exhaustive query pairs: "
                    f"{len(data.db_names)} db images <= "
                    f"{conf['exhaustive_max_db']})"
                )
        parsers.write_pairs(out.pairs_query, pairs_query)
    logger.info(
        "%d db-db pairs (%s), %d query-db pairs (%s)",
        len(pairs_db),
        db_pairs_method,
        len(pairs_query),
        retrieval_method,
    )
    with stage("match"):
        match_features.main(
            matcher,
            out.pairs_db,
            out.features,
            matches=out.matches_db,
            device=conf["device"],
        )
        match_features.main(
            matcher,
            out.pairs_query,
            out.features,
            matches=out.matches_query,
            device=conf["device"],
        )
    with stage("triangulate"):
        model, tri_stats = tri.run(
            out.sfm,
            reference,
            data.image_dir,
            pairs_db,
            out.features,
            out.matches_db,
            conf=conf["triangulation"],
        )
    with stage("localize"):
        logs = loc.main(
            model,
            data.queries,
            _ranked(pairs_query),
            out.features,
            out.matches_query,
            out.results,
            conf=conf["localization"],
        )
    evaluation, table, retrieval_recall = evaluate_run(
        out.results, data, reference, _ranked(pairs_ret), tag
    )

    summary = {
        "features": features,
        "dataset": str(dataset),
        "synthetic": (dataset / "synthetic_config.json").is_file(),
        "out_dir": str(out.root),
        "results_path": str(out.results),
        "logs_path": str(loc.logs_path_for(out.results)),
        "paths": {"image_dir": str(data.image_dir), **out.as_dict()},
        "conf": {**conf, "matcher": matcher, "extract": {k: ext_conf[k] for k in sorted(ext_conf)}},
        "db_pairs_method": db_pairs_method,
        "retrieval_method": retrieval_method,
        "query_pairs": "exhaustive" if exhaustive_q else f"retrieval top {conf['num_loc']}",
        "num_query_pairs": len(pairs_query),
        "retrieval_recall": retrieval_recall,
        "num_db": len(data.db_names),
        "num_queries": len(query_names),
        "timings": stage.wall,
        "cpu_timings": stage.cpu,
        "triangulation": tri_stats,
        "localization": logs["summary"],
        "failures": {q: e["reason"] for q, e in logs["loc"].items() if not e["success"]},
        "evaluation": (
            {k: v for k, v in evaluation.items() if k != "per_query"} if evaluation else None
        ),
        "per_query": (evaluation or {}).get("per_query"),
        "table": table,
    }
    write_json(out.summary, summary)
    return summary


def visualize(summary: dict, n: int, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """PNGs of a finished run (``localize.run_pictures.save_pipeline_figures``): the ``n``
    query-db pairs with the most matches on PnP inliers (matches and keypoints), SfM views, and
    ``n`` day, night and failed queries' PnP inliers (green) / outliers (red), captioned with the
    pose error (ground truth) or the failure reason. Default folder ``<out_dir>/viz``."""
    paths = summary["paths"]
    logs = json.loads(Path(summary["logs_path"]).read_text(encoding="utf-8"))
    gt = read_aachen(summary["dataset"]).ground_truth
    return run_pictures.save_pipeline_figures(
        paths["image_dir"],
        paths["features"],
        paths["matches_query"],
        paths["pairs_query"],
        Path(out_dir or Path(summary["out_dir"]) / "viz"),
        n,
        loc_logs=logs,
        gt_poses=gt,
        reconstruction=paths["sfm"],
    )


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def format_summary(s: dict) -> str:
    """The text the CLI prints for one run: counts, recall table, timings, output paths."""
    lo, tr = s["localization"], s["triangulation"]
    lines = [
        f"features {s['features']} | dataset {s['dataset']}"
        f"{' (synthetic)' if s['synthetic'] else ''} | {s['num_db']} db, "
        f"{s['num_queries']} queries",
        f"triangulation: {tr['num_points3D']} points, mean track length "
        f"{tr['mean_track_length']:.2f}, mean reprojection error "
        f"{tr['mean_reprojection_error_px']:.3f} px",
        f"localization: {lo['num_localized']} / {lo['num_queries']} queries with a PnP pose"
        + (f"; failures: {lo['failure_reasons']}" if lo["num_failed"] else ""),
    ]
    if s.get("retrieval_recall"):
        lines.append(
            f"query pairs: {s['query_pairs']}; retrieval recall@1/5/10 (a covisible db "
            "view in the top k): "
            + ", ".join(
                f"{c} " + "/".join(f"{100 * v:.0f}" for v in r.values())
                for c, r in s["retrieval_recall"].items()
                if r
            )
        )
    lines.append(s["table"] if s["table"] else f"no ground truth: submit {s['results_path']}")
    lines.append(format_timings(s["timings"], s.get("cpu_timings")))
    lines.append(f"results: {s['results_path']}\nsummary: {Path(s['out_dir']) / 'results.json'}")
    return "\n".join(lines)


def print_summary(s: dict) -> None:
    """Print :func:`format_summary` (CLI entry points only)."""
    print(format_summary(s))


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--features",
        required=True,
        help="registered descriptor name (sift, rootsift, hardnet, ...) or checkpoint",
    )
    p.add_argument(
        "--dataset",
        default=None,
        type=existing_dir,
        help=f"Aachen-layout root (default {REAL_ROOT} if present, else the synthetic scene)",
    )
    p.add_argument(
        "--outputs",
        default="outputs/aachen",
        type=output_dir,
        help="output root (one run at a time per <outputs>/<features tag>)",
    )
    p.add_argument(
        "--num_covis",
        type=positive_int,
        default=default_conf["num_covis"],
        help="db-db pairs per db image for triangulation",
    )
    p.add_argument(
        "--num_loc",
        type=positive_int,
        default=default_conf["num_loc"],
        help="retrieved db images per query",
    )
    p.add_argument(
        "--query_pairs",
        default=default_conf["query_pairs"],
        choices=QUERY_PAIRS,
        help="query-db pairs: exhaustive, retrieval top --num_loc, or auto "
        f"(exhaustive up to {default_conf['exhaustive_max_db']} db images)",
    )
    p.add_argument(
        "--max_keypoints",
        type=positive_int,
        default=None,
        help="strongest DoG keypoints per image (>= 1; default: extraction's)",
    )
    p.add_argument(
        "--resize_max",
        type=positive_int,
        default=None,
        help="longer image side seen by the detector (>= 1 px)",
    )
    p.add_argument(
        "--contrast_stretch",
        action="store_true",
        default=None,
        help="stretch each image's grey levels before detection (dark / night photos)",
    )
    p.add_argument("--matcher", default=None, help="localize.match_features conf name")
    p.add_argument(
        "--device", default=None, type=device_arg, help="torch device (default: cuda if available)"
    )
    p.add_argument("--overwrite", action="store_true", help="recompute everything")
    p.add_argument(
        "--synthetic",
        default="default",
        choices=sorted(SYNTHETIC_PRESETS),
        help="synthetic scene preset used when no --dataset is given",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="keep COLMAP's INFO log lines, and full tracebacks of errors",
    )
    p.add_argument(
        "--viz",
        type=positive_int,
        default=None,
        metavar="N",
        help="write pictures (N best query pairs, N day / night / failed queries, "
        "SfM views) to <outputs>/<features>/viz",
    )
    args = p.parse_args(argv)
    setup_logging()
    colmap.set_verbose(args.verbose)
    with cli_errors("pipelines.aachen"):
        s = run(
            args.features,
            args.dataset,
            args.outputs,
            num_covis=args.num_covis,
            num_loc=args.num_loc,
            max_keypoints=args.max_keypoints,
            resize_max=args.resize_max,
            contrast_stretch=args.contrast_stretch,
            matcher=args.matcher,
            device=args.device,
            overwrite=args.overwrite,
            synthetic=args.synthetic,
            query_pairs=args.query_pairs,
        )
        if args.viz:
            s["viz"] = [str(f) for f in visualize(s, args.viz)]
    print_summary(s)
    if args.viz:
        print(f"{len(s['viz'])} pictures in {Path(s['out_dir']) / 'viz'}")
    return s


if __name__ == "__main__":
    main()
