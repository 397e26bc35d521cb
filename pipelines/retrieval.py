"""revisitop retrieval benchmark (ROxford5k / RParis6k) of local descriptors via VLAD / ASMK.

    python -m pipelines.retrieval --dataset roxford5k --features hndesc [--data_root datasets]
                                  [--rerank] [--qe] [--method vlad|asmk]

Data: ``<data_root>/<dataset>`` (revisitop layout, ``gnd_<dataset>.pkl`` + ``jpg/``), else the
synthetic ``<data_root>/<dataset>-synth`` (``--synthetic`` forces it). Queries are cropped to
their ``bbx``; the vocabulary is learned on a separate image set (the other dataset, or
synthetic renders of TRAIN photos), never the evaluated database. Reports revisitop E / M / H
mAP and mP@1,5,10 into ``<outputs>/<dataset>[-synth]/<features>/results-<method>-k<K>[-rerank]
[-qe].json`` and ``results.json`` (default outputs root ``outputs/retrieval``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from descriptors import registry
from descriptors.registry import OPENCV_NAMES
from descriptors.util import atomic_write, atomic_write_text, setup_logging, write_json
from localize import extract_features, h5, io, retrieve
from localize.cli import (
    ArgumentParser,
    cli_errors,
    nonneg_float,
    nonneg_int,
    output_dir,
    positive_int,
)
from localize.cli import device as device_arg
from localize.data import roxford, roxford_synth
from localize.revisitop_eval import evaluate_protocols, format_results

logger = logging.getLogger(__name__)

OTHER = {"roxford5k": "rparis6k", "rparis6k": "roxford5k"}


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--dataset",
        default="roxford5k",
        choices=list(OTHER),
        help="revisitop dataset (real <data_root>/<dataset>, else its synthetic set)",
    )
    p.add_argument(
        "--features",
        default="sift",
        help=f"descriptor: {', '.join(OPENCV_NAMES)}, a recipe name (hardnet, hndesc, "
        "...) or a checkpoint path",
    )
    p.add_argument(
        "--data_root",
        type=Path,
        default=Path("datasets"),
        help="folder holding the datasets (real and synthetic)",
    )
    p.add_argument(
        "--outputs",
        type=output_dir,
        default=Path("outputs/retrieval"),
        help="outputs root; results go to <outputs>/<dataset>[-synth]/<features>/",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use the synthetic set even if the real one is present",
    )
    p.add_argument(
        "--method",
        default="vlad",
        choices=["vlad", "asmk"],
        help="global representation: VLAD vectors or an ASMK inverted file",
    )
    p.add_argument(
        "--num_words",
        type=positive_int,
        default=None,
        help="vocabulary size (default 64 for VLAD, 256 for ASMK)",
    )
    p.add_argument(
        "--multiple_assignment",
        type=positive_int,
        default=1,
        help="visual words each local descriptor is assigned to",
    )
    p.add_argument(
        "--pca_dim",
        type=positive_int,
        default=None,
        help="PCA of the VLAD vectors to this dimension, learned on the vocabulary "
        "set (default: none)",
    )
    p.add_argument(
        "--max_keypoints", type=positive_int, default=1000, help="strongest DoG keypoints per image"
    )
    p.add_argument(
        "--resize_max",
        type=positive_int,
        default=1024,
        help="longer image side seen by the detector (pixels)",
    )
    p.add_argument(
        "--vocab_images",
        type=positive_int,
        default=60,
        help="images of the separate vocabulary set",
    )
    p.add_argument(
        "--index",
        default="flat",
        choices=["flat", "ivf"],
        help="FAISS index: exact (flat) or inverted file (ivf, large collections)",
    )
    p.add_argument("--rerank", action="store_true", help="spatial re-ranking (RANSAC inliers)")
    p.add_argument(
        "--rerank_top",
        type=positive_int,
        default=50,
        help="re-rank this many top database images per query",
    )
    p.add_argument(
        "--rerank_model",
        default="homography",
        choices=["homography", "fundamental"],
        help="geometric model fitted by RANSAC when re-ranking",
    )
    p.add_argument("--qe", action="store_true", help="query expansion (VLAD only)")
    p.add_argument(
        "--qe_n",
        type=positive_int,
        default=3,
        help="top database vectors averaged into the expanded query",
    )
    p.add_argument("--qe_alpha", type=nonneg_float, default=0.0, help="0 = AQE, >0 = alpha-QE")
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=0,
        help="seed of the synthetic sets, the vocabulary and the random ranking",
    )
    p.add_argument(
        "--device", default=None, type=device_arg, help="torch device (default: cuda if available)"
    )
    g = p.add_argument_group("synthetic set (defaults: localize.data.roxford_synth.SYNTH_DEFAULTS)")
    g.add_argument(
        "--n_landmarks", type=positive_int, default=None, help="distinct landmarks (>= 8)"
    )
    g.add_argument(
        "--views_per_landmark", type=positive_int, default=None, help="database views per landmark"
    )
    g.add_argument(
        "--n_distractors", type=positive_int, default=None, help="database images of no landmark"
    )
    g.add_argument(
        "--n_queries", type=positive_int, default=None, help="queries, spread over the landmarks"
    )
    g.add_argument(
        "--image_size",
        type=positive_int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="image width and height in pixels",
    )
    args = p.parse_args(None if argv is None else list(argv))
    if args.qe and args.method != "vlad":
        p.error("--qe needs single-vector globals: use --method vlad")
    return args


def _synth_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw = {}
    for k in ("n_landmarks", "views_per_landmark", "n_distractors", "n_queries"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    if args.image_size is not None:
        kw["size"] = tuple(args.image_size)
    kw["seed"] = args.seed
    return kw


def _write_query_crops(data: roxford.RevisitopData, out_dir: Path) -> list[str]:
    """Queries cropped to bbx (revisitop / PIL semantics), as lossless PNGs; returns names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(data.nq):
        name = f"{data.qimlist[i]}.png"
        p = out_dir / name
        meta = out_dir / f".{name}.bbx"
        want = json.dumps([float(x) for x in data.gnd[i]["bbx"]])
        if not (p.is_file() and meta.is_file() and meta.read_text() == want):
            with atomic_write(p) as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(data.query_image(i), cv2.COLOR_RGB2BGR)):
                    raise OSError(f"{p}: cannot write query crop")
            atomic_write_text(meta, want)
        names.append(name)
    return names


def _vocab_image_set(args: argparse.Namespace, is_synth: bool) -> tuple[Path, list[str], str]:
    """(image dir, names, description) of the separate vocabulary set."""
    other = OTHER[args.dataset]
    real_other = args.data_root / other
    if not is_synth and (real_other / f"gnd_{other}.pkl").is_file():
        od = roxford.read_revisitop(real_other, other, check_images=False)
        sel = np.linspace(0, od.n - 1, min(args.vocab_images, od.n)).round().astype(int)
        names = [od.image_name(int(i)) for i in np.unique(sel)]
        return od.image_dir, names, f"real {other} ({len(names)} images)"
    size = tuple(args.image_size) if args.image_size else roxford_synth.SYNTH_DEFAULTS["size"]
    d, names = roxford_synth.ensure_vocabulary_images(
        args.data_root, args.vocab_images, args.seed, size
    )
    return d, names, f"synthetic TRAIN-photo renders ({len(names)} images, {d})"


def _stem(features: str) -> str:
    return (
        Path(str(features)).stem
        if ("/" in str(features) or str(features).endswith(".pt"))
        else str(features)
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark (module docstring); returns the report written to results.json plus
    ``_raw`` = {ranking: evaluate_protocols output}."""
    t0 = time.time()
    if args.synthetic:
        data = roxford.read_revisitop(
            roxford_synth.ensure_synthetic_revisitop(
                args.data_root, args.dataset, **_synth_kwargs(args)
            ),
            args.dataset,
        )
        is_synth = True
    else:
        data, is_synth = roxford_synth.find_revisitop(
            args.data_root, args.dataset, **_synth_kwargs(args)
        )
    ds_label = f"{args.dataset}-synth" if is_synth else args.dataset
    base = args.outputs / ds_label
    out = base / _stem(args.features)
    with h5.run_lock(out):  # a second run on the same outputs: one line naming the holder
        return _run(args, data, is_synth, ds_label, base, out, t0)


def _run(
    args: argparse.Namespace,
    data: roxford.RevisitopData,
    is_synth: bool,
    ds_label: str,
    base: Path,
    out: Path,
    t0: float,
) -> dict[str, Any]:
    """:func:`run` once its output folder is locked."""
    out.mkdir(parents=True, exist_ok=True)
    logger.info(
        "dataset %s: %d database images, %d queries (%s)", ds_label, data.n, data.nq, data.root
    )

    # 1. local features ----------------------------------------------------------------------
    xconf = extract_features.resolve_conf(
        {
            **extract_features.default_conf,
            "descriptor": str(args.features),
            "max_keypoints": args.max_keypoints,
            "resize_max": args.resize_max,
        }
    )
    extractor = registry.load(args.features, device=args.device)
    db_names = [data.image_name(i) for i in range(data.n)]
    feats_db = extract_features.main(
        xconf,
        data.image_dir,
        feature_path=out / "feats-db.h5",
        image_list=db_names,
        device=args.device,
        extractor=extractor,
    )
    crop_dir = base / "query_crops"
    q_names = _write_query_crops(data, crop_dir)
    feats_q = extract_features.main(
        xconf,
        crop_dir,
        feature_path=out / "feats-query.h5",
        image_list=q_names,
        device=args.device,
        extractor=extractor,
    )
    vdir, vnames, vdesc = _vocab_image_set(args, is_synth)
    feats_v = extract_features.main(
        xconf,
        vdir,
        feature_path=out / "feats-vocab.h5",
        image_list=vnames,
        device=args.device,
        extractor=extractor,
    )
    t_extract = time.time() - t0

    # 2. vocabulary on the separate set ------------------------------------------------------
    conf = retrieve.resolve_conf(
        {
            **retrieve.default_conf,
            "method": args.method,
            "num_words": args.num_words or (64 if args.method == "vlad" else 256),
            "multiple_assignment": args.multiple_assignment,
            "pca_dim": args.pca_dim,
        }
    )
    vocab_path = out / f"vocab-{args.method}-k{conf['num_words']}.npz"
    vocab = retrieve.learn_vocabulary_from_features(feats_v, conf, vnames, args.seed, vocab_path)

    # 3. global representations + 4. search --------------------------------------------------
    _, db_desc, db_sizes = io.read_descriptors(feats_db, db_names)
    _, q_desc, q_sizes = io.read_descriptors(feats_q, q_names)
    n_db = data.n
    k = n_db if n_db <= 20000 else 1000
    if args.method == "vlad":
        db_vec = np.stack(retrieve.encode(db_desc, vocab, conf, "vlad db"))
        q_vec = np.stack(retrieve.encode(q_desc, vocab, conf, "vlad query"))
        tag = f"vlad-k{conf['num_words']}"
        io.write_global_descriptors(
            out / f"global-feats-{tag}.h5", dict(zip(db_names, db_vec)), db_sizes
        )
        io.write_global_descriptors(
            out / f"global-feats-{tag}-query.h5", dict(zip(q_names, q_vec)), q_sizes
        )
        index = retrieve.build_index(db_vec, args.index)
        scores, idx = retrieve.search_index(index, q_vec, k)
    else:
        db_enc = retrieve.encode(db_desc, vocab, conf, "asmk db")
        q_enc = retrieve.encode(q_desc, vocab, conf, "asmk query", query=True)
        aindex = retrieve.AsmkIndex(db_enc, conf["asmk_alpha"], conf["asmk_tau"])
        scores, idx = aindex.search(q_enc, k)
    results = {"base": evaluate_protocols(retrieve.ranks_from_topk(idx, n_db), data.gnd)}

    if args.rerank:
        rconf = {
            "top": args.rerank_top,
            "model": args.rerank_model,
            "ratio": 0.8 if str(args.features) in OPENCV_NAMES else 0.9,
        }
        qf = [(io.get_keypoints(feats_q, n), d) for n, d in zip(q_names, q_desc)]
        cache = retrieve.FeatureCache(feats_db, db_names, size=max(256, args.rerank_top * 2))
        idx, scores, _ = retrieve.spatial_rerank(qf, cache, idx, scores, rconf)
        results["rerank"] = evaluate_protocols(retrieve.ranks_from_topk(idx, n_db), data.gnd)
    if args.qe:
        q2 = retrieve.query_expansion(db_vec, q_vec, idx, scores, args.qe_n, args.qe_alpha)
        scores, idx = retrieve.search_index(index, q2, k)
        results["qe"] = evaluate_protocols(retrieve.ranks_from_topk(idx, n_db), data.gnd)
    rng = np.random.default_rng(args.seed)
    rand = np.stack([rng.permutation(n_db) for _ in range(data.nq)], 1)
    results["random"] = evaluate_protocols(rand, data.gnd)
    final_key = "qe" if args.qe else ("rerank" if args.rerank else "base")

    def _pct(r: dict) -> dict:
        return {
            s: {
                "mAP": round(100 * r[s]["map"], 2),
                "mP@k": {str(kk): round(100 * p, 2) for kk, p in zip(r[s]["kappas"], r[s]["mpr"])},
                "n_queries": r[s]["n_valid"],
            }
            for s in ("E", "M", "H")
        }

    report = {
        "dataset": ds_label,
        "synthetic": is_synth,
        "data_dir": str(data.root),
        "n_db": n_db,
        "n_queries": data.nq,
        "label_stats": roxford.label_stats(data),
        "features": str(args.features),
        "extract_conf": {k_: xconf[k_] for k_ in ("max_keypoints", "resize_max", "mr_size")},
        "retrieval_conf": {
            k_: conf[k_]
            for k_ in (
                "method",
                "num_words",
                "multiple_assignment",
                "intra_norm",
                "power",
                "pca_dim",
            )
        },
        "vocabulary_set": vdesc,
        "index": args.index,
        "rerank": bool(args.rerank),
        "qe": bool(args.qe),
        "results": {k_: _pct(v) for k_, v in results.items()},
        "final": final_key,
        "timing_s": {"extract": round(t_extract, 1), "total": round(time.time() - t0, 1)},
        "outputs": str(out),
    }
    tag = (
        f"{args.method}-k{conf['num_words']}"
        + ("-rerank" if args.rerank else "")
        + ("-qe" if args.qe else "")
    )
    report["run_tag"] = tag
    for name in (f"results-{tag}.json", "results.json"):  # per-configuration + latest
        write_json(out / name, report, indent=1)
    report["_raw"] = results
    return report


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Command-line entry point: run, print the E / M / H tables, return the report."""
    args = _parse_args(argv)
    setup_logging()
    with cli_errors("pipelines.retrieval"):
        report = run(args)
    raw = report.pop("_raw")
    title = (
        f"{report['dataset']}  features={report['features']}  "
        f"{report['retrieval_conf']['method']} k={report['retrieval_conf']['num_words']}  "
        f"db={report['n_db']} q={report['n_queries']}"
    )
    print("\n" + title)
    for key in ("base", "rerank", "qe", "random"):
        if key in raw:
            print(format_results(raw[key], f"[{key}]"))
    print(f"results: {Path(report['outputs']) / 'results.json'}")
    return report


if __name__ == "__main__":
    main()
