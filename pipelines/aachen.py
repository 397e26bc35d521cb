"""hloc-style Aachen Day-Night v1.1 localization with any registered local descriptor.

    python -m pipelines.aachen --features hndesc [--dataset datasets/aachen_v1.1]
        [--outputs outputs/aachen] [--num_covis 20] [--num_loc 10] [--max_keypoints N]

Stages (each an hloc-style module of ``localize``):

1. extract DoG keypoints + descriptors of the database and the query images (``localize.extract``);
2. db-db pairs: covisibility in the reference model (``localize.pairs.from_covisibility``) when
   the reference model has 3D points (the real Aachen model has SIFT points), else from the
   reference poses (nearest camera centres with similar viewing directions, hloc's
   ``localize.pairs.from_poses``) — the synthetic dataset's reference model carries poses only;
3. query-db pairs from global retrieval (``localize.retrieve`` when it offers a global
   descriptor API, else ``pairs.global_descriptors_meanpool`` + ``pairs.from_retrieval``);
4. matching (``localize.match``; ``nn-ratio`` for sift/rootsift, ``nn-ratio-0.9`` for learned
   descriptors);
5. triangulation with the reference poses fixed (``localize.triangulate``);
6. localization (``localize.localize``) -> Aachen submission file;
7. evaluation against ``queries/ground_truth_poses.txt`` when present (synthetic data).

Without ``--dataset`` (and no ``datasets/aachen_v1.1``) the synthetic Aachen-layout scene is
generated at ``datasets/aachen-synth`` and used; a given ``--dataset`` that does not exist is
an error. ``--features`` takes any registered descriptor name
(``descriptors.registry``) or a checkpoint path. Outputs go to ``<outputs>/<features tag>/``
(``results.json``, the results file, logs, features, pairs, matches, the sfm model); they are
reused when ``fingerprint.json`` is unchanged: the descriptor and the content hash of its weights
file, the settings, and the dataset's content (every image's ``io.image_fingerprint``, the
reference model and query list files). Otherwise they are wiped; when only images changed,
``features.h5`` is kept and extraction recomputes just the entries of the changed images.
Known errors (bad dataset, features, images, files) exit 2 with one line
``pipelines.aachen: <message>``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "num_covis": 20,            # db-db pairs per db image for triangulation
    "num_loc": 50,              # retrieved db images per query (hloc's top-50 for Aachen)
    "query_pairs": "auto",      # 'exhaustive' (every query x every db image), 'retrieval'
                                # (top num_loc), 'auto': exhaustive up to exhaustive_max_db
    "exhaustive_max_db": 100,   # db images up to which 'auto' matches queries exhaustively
    "max_keypoints": None,      # None: localize.extract default
    "resize_max": None,         # None: localize.extract default
    "matcher": None,            # None: nn-ratio for sift/rootsift, nn-ratio-0.9 otherwise
    "global_method": "vlad",    # only for the stop-gap without localize.retrieve
                                # (pairs.global_descriptors_meanpool: vlad | mean)
    "pose_pairs_max_angle_deg": 60.0,  # pose-based db pairs: max viewing-direction angle
    "device": None,
    "overwrite": False,         # wipe <outputs>/<tag> first
    "localization": {},         # localize.localize.DEFAULTS overrides
    "triangulation": {},        # localize.triangulate.DEFAULTS overrides
    "synthetic": "default",     # synthetic scene preset when --dataset is absent
                                # (localize.data.aachen.SYNTHETIC_PRESETS: default | hard)
}

SYNTH_ROOT = Path("datasets") / "aachen-synth"
REAL_ROOT = Path("datasets") / "aachen_v1.1"
STAGES = ("extract_db", "extract_query", "pairs", "match", "triangulate", "localize")


def features_tag(features: str | os.PathLike) -> str:
    """Directory name for a descriptor: the registry name, or the checkpoint file stem."""
    s = str(features)
    p = Path(s)
    return p.stem if (p.suffix in (".pt", ".pth", ".ckpt") or os.sep in s or "/" in s) else s


def _is_opencv(features: str) -> bool:
    return str(features) in ("sift", "rootsift")


def _file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """blake2b (128 bit, hex) of a whole file's content."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _features_fingerprint(features: str) -> dict:
    """What identifies the descriptor: its name and the CONTENT hash of its weights file
    (retrained or replaced weights invalidate old outputs; a mere ``touch`` does not)."""
    s = str(features)
    path = None
    if not _is_opencv(s):
        try:
            from descriptors import registry
            from descriptors.recipes import RECIPE_MODULES
            path = registry.weights_path(s) if s in RECIPE_MODULES else Path(s)
        except ImportError:  # registry missing: fall back to the literal path
            path = Path(s)
    if path is not None and path.is_file():
        return {"features": s, "weights_size": path.stat().st_size,
                "weights_blake2b": _file_hash(path)}
    return {"features": s}


def image_fingerprints(data: Any) -> dict[str, str]:
    """{image name: ``io.image_fingerprint``} of every db and query image of the dataset
    (``localize.data.aachen.AachenData``); also what extraction stores with each entry."""
    from localize import extract
    names = list(dict.fromkeys(list(data.db_names) + [n for n, _ in data.queries]))
    prints = extract.image_fingerprints(data.image_dir, names)
    missing = [n for n in names if n not in prints]
    if missing:
        from localize import io
        raise io.ImageReadError(f"{len(missing)} dataset images cannot be read, e.g. "
                                f"{Path(data.image_dir) / missing[0]}")
    return prints


def _dataset_fingerprint(root: Path, data: Any, prints: dict[str, str]) -> dict:
    """What identifies the dataset's content: a digest of every db / query image fingerprint
    (size, mtime_ns, head+tail hash), the reference model files and the query lists (same
    fingerprint), the synthetic config. Not the dataset's path."""
    from localize import io
    h = hashlib.blake2b(digest_size=16)
    for n in sorted(prints):
        h.update(f"{n}\0{prints[n]}\n".encode())
    out: dict[str, Any] = {"num_images": len(prints), "images_blake2b": h.hexdigest()}
    cfg = root / "synthetic_config.json"
    if cfg.is_file():
        out["synthetic_config"] = cfg.read_text()
    files = sorted(p for p in Path(data.reference_model).iterdir() if p.is_file())
    files += [Path(p) for p in getattr(data, "query_lists", [])]
    out["files"] = {str(p.relative_to(root) if p.is_relative_to(root) else p):
                    io.image_fingerprint(p) for p in files}
    return out


def _wipe(out: Path, keep: str | None = None) -> None:
    """Delete ``out`` (all of it, or everything but the entry named ``keep``)."""
    if keep is None:
        shutil.rmtree(out)
        return
    for p in out.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class _StageTimer:
    """``with stage(name):`` (or ``start(name)`` / ``stop()``) records wall and process-CPU
    seconds. CPU time (all threads of this process) is the robust number on a shared machine."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]):
        self.wall, self.cpu, self.name = wall, cpu, None

    def start(self, name: str) -> "_StageTimer":
        self.name, self.t0, self.c0 = name, time.perf_counter(), time.process_time()
        return self

    def stop(self) -> None:
        self.wall[self.name] = time.perf_counter() - self.t0
        self.cpu[self.name] = time.process_time() - self.c0

    def __call__(self, name: str) -> "_StageTimer":
        return self.start(name)

    def __enter__(self) -> "_StageTimer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _retrieval_pairs(feature_path: Path, global_path: Path, query_names: list[str],
                     db_names: list[str], num_loc: int, method: str,
                     vocab_path: Path | None = None) -> tuple[list, str]:
    """Query-db retrieval pairs, best first.

    With ``localize.retrieve`` (VLAD over a k-means vocabulary): the vocabulary is learned on
    the DATABASE images' descriptors only (the map, as a deployed system would; queries never
    enter it), then every image is encoded and ``pairs.from_retrieval`` ranks db images per
    query. Without it: the ``pairs.global_descriptors_meanpool`` stop-gap.
    """
    from localize import io
    from localize import pairs as pairs_mod
    if global_path.is_file() and set(query_names + db_names) <= set(io.list_h5_names(global_path)):
        # outputs are wiped whenever features / dataset / settings change: this file is current
        used = "cached " + global_path.name
        pairs = pairs_mod.from_retrieval(global_path, num_loc, query_prefix=None,
                                         query_list=query_names, db_prefix=None,
                                         db_list=db_names)
        return pairs, used
    try:
        from localize import retrieve  # type: ignore
    except ImportError:
        retrieve = None
    if retrieve is not None and all(callable(getattr(retrieve, a, None)) for a in
                                    ("learn_vocabulary_from_features", "main")):
        conf = retrieve.resolve_conf(None) if hasattr(retrieve, "resolve_conf") else None
        vocab_path = vocab_path or global_path.with_name("vocabulary.npz")
        retrieve.learn_vocabulary_from_features(feature_path, conf, names=db_names,
                                                out_path=vocab_path)
        retrieve.main(feature_path, vocab_path, global_path, names=query_names + db_names,
                      conf=conf)
        used = f"localize.retrieve VLAD (k={conf.get('num_words') if conf else '?'}, " \
               "vocabulary from db images)"
    else:
        pairs_mod.global_descriptors_meanpool(feature_path, global_path, method=method,
                                              names=query_names + db_names)
        used = f"pairs.global_descriptors_meanpool({method})"
    pairs = pairs_mod.from_retrieval(global_path, num_loc, query_prefix=None,
                                     query_list=query_names, db_prefix=None, db_list=db_names)
    return pairs, used


def resolve_dataset(dataset: str | os.PathLike | None, synthetic: str = "default") -> Path:
    """The dataset root to use.

    ``dataset`` given: it must exist (a mistyped path is an error, never a silent switch to the
    synthetic scene). ``None``: the real ``datasets/aachen_v1.1`` when present, else the
    synthetic scene of preset ``synthetic`` (``localize.data.aachen.SYNTHETIC_PRESETS``),
    generated on first use and said once.

    Raises:
        FileNotFoundError: ``dataset`` is given and does not exist.
    """
    from localize.data.aachen import SYNTHETIC_PRESETS, ensure_synthetic_aachen
    if dataset is not None:
        if not Path(dataset).exists():
            raise FileNotFoundError(f"dataset {dataset} not found (omit --dataset for the "
                                    f"synthetic scene)")
        return Path(dataset)
    if REAL_ROOT.exists():
        return REAL_ROOT
    if synthetic not in SYNTHETIC_PRESETS:
        raise ValueError(f"unknown synthetic preset '{synthetic}' "
                         f"(known: {', '.join(SYNTHETIC_PRESETS)})")
    synth_root = SYNTH_ROOT if synthetic == "default" else \
        SYNTH_ROOT.with_name(f"{SYNTH_ROOT.name}-{synthetic}")
    msg = f"no --dataset and no {REAL_ROOT}: using the synthetic Aachen scene at {synth_root}"
    logger.warning(msg)
    print(msg, file=sys.stderr)
    return Path(ensure_synthetic_aachen(synth_root, **SYNTHETIC_PRESETS[synthetic]))


def run(features: str | os.PathLike, dataset: str | os.PathLike | None = None,
        outputs: str | os.PathLike = "outputs/aachen", **conf: Any) -> dict:
    """Run the whole pipeline; returns the dict also written to ``<out>/results.json``.

    Args:
        features: registered descriptor name or checkpoint path.
        dataset: Aachen-layout root (must exist); None: ``datasets/aachen_v1.1`` if present,
            else the synthetic scene (``resolve_dataset``).
        outputs: output root; this run writes to ``<outputs>/<features tag>/``.
        conf: overrides of :data:`DEFAULTS`.
    Returns:
        {"features", "dataset", "synthetic", "out_dir", "results_path", "conf", "timings" (s per
        stage), "num_db", "num_queries", "triangulation" (stats), "localization" (summary),
        "evaluation" (evaluate() output or None), "table" (str or None)}.
    """
    from localize import evaluate as ev
    from localize import extract, io, match
    from localize import localize as loc
    from localize import triangulate as tri
    from localize.data.aachen import read_aachen

    unknown = set(conf) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pipeline option(s): {sorted(unknown)}")
    conf = {**DEFAULTS, **conf}
    features = str(features)
    # a bad descriptor name / checkpoint fails here (one-line DescriptorError), before any work
    extractor = extract.load_extractor(features, device=conf["device"],
                                       batch_size=extract.DEFAULTS["batch_size"])
    dataset = resolve_dataset(dataset, conf["synthetic"])
    data = read_aachen(dataset)
    synthetic = (dataset / "synthetic_config.json").is_file()

    tag = features_tag(features)
    out = Path(outputs) / tag
    ext_conf: dict[str, Any] = {"descriptor": features}
    for k in ("max_keypoints", "resize_max"):
        if conf[k] is not None:
            ext_conf[k] = conf[k]
    ext_conf = extract.resolve_conf(ext_conf)
    matcher = conf["matcher"] or ("nn-ratio" if _is_opencv(features) else "nn-ratio-0.9")
    prints = image_fingerprints(data)
    fingerprint = {"features": _features_fingerprint(features),
                   "dataset": _dataset_fingerprint(dataset, data, prints),
                   "extract": {k: ext_conf[k] for k in sorted(ext_conf) if k != "output"},
                   "matcher": matcher, "num_covis": conf["num_covis"],
                   "num_loc": conf["num_loc"], "global_method": conf["global_method"],
                   "query_pairs": conf["query_pairs"],
                   "exhaustive_max_db": conf["exhaustive_max_db"],
                   "pose_pairs_max_angle_deg": conf["pose_pairs_max_angle_deg"],
                   "triangulation": conf["triangulation"]}
    fp_path = out / "fingerprint.json"
    if out.exists():
        old = None
        if fp_path.is_file():
            try:
                old = json.loads(fp_path.read_text())
            except json.JSONDecodeError:
                old = None
        new = json.loads(json.dumps(fingerprint, default=_json_default))
        if conf["overwrite"] or old != new:
            changed = sorted(k for k in new if not old or old.get(k) != new[k])
            # only the images changed: features.h5 stays (extraction recomputes exactly the
            # entries whose image fingerprint changed); everything downstream is wiped
            keep = "features.h5" if (not conf["overwrite"] and changed == ["dataset"]) else None
            logger.info("wiping %s%s (%s)", out, f" except {keep}" if keep else "",
                        "overwrite" if conf["overwrite"] else f"changed: {', '.join(changed)}")
            _wipe(out, keep)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(fp_path, fingerprint)

    feature_path = out / "features.h5"
    global_path = out / "global-features.h5"
    pairs_db = out / f"pairs-db-covis{conf['num_covis']}.txt"
    if conf["query_pairs"] not in ("auto", "exhaustive", "retrieval"):
        raise ValueError(f"query_pairs must be auto, exhaustive or retrieval, got "
                         f"{conf['query_pairs']!r}")
    exhaustive_q = conf["query_pairs"] == "exhaustive" or (
        conf["query_pairs"] == "auto" and len(data.db_names) <= conf["exhaustive_max_db"])
    pairs_loc = out / ("pairs-query-exhaustive.txt" if exhaustive_q
                       else f"pairs-query-retrieval{conf['num_loc']}.txt")
    matches_db = out / "matches-db.h5"
    matches_loc = out / "matches-query.h5"
    sfm_dir = out / "sfm"
    results_path = out / f"Aachen-v1.1_{tag}_results.txt"
    query_names = [n for n, _ in data.queries]
    timings: dict[str, float] = {}      # wall seconds per stage
    cpu_timings: dict[str, float] = {}  # process CPU seconds (all threads) per stage
    stage = _StageTimer(timings, cpu_timings)

    # 1. extraction (one extractor for both sets)
    with stage("extract_db"):
        extract.main(ext_conf, data.image_dir, feature_path=feature_path,
                     image_list=data.db_names, device=conf["device"], extractor=extractor,
                     fingerprints=prints)
    with stage("extract_query"):
        extract.main(ext_conf, data.image_dir, feature_path=feature_path, image_list=query_names,
                     device=conf["device"], extractor=extractor, fingerprints=prints)

    # 2-3. pairs
    stage.start("pairs")
    from localize import colmap, pairs as pairs_mod
    ref = colmap.read_model(data.reference_model)
    if ref.num_points3D() > 0:
        db_pairs = pairs_mod.from_covisibility(data.reference_model, conf["num_covis"])
        db_pairs_method = "covisibility"
    else:
        db_pairs = pairs_mod.from_poses(ref, conf["num_covis"], conf["pose_pairs_max_angle_deg"])
        db_pairs_method = "poses (reference model has no 3D points)"
    if not db_pairs:
        raise RuntimeError(f"{data.reference_model}: no db-db pairs for triangulation")
    io.write_pairs(pairs_db, db_pairs)
    loc_pairs, retrieval_method = _retrieval_pairs(feature_path, global_path, query_names,
                                                   data.db_names, conf["num_loc"],
                                                   conf["global_method"])
    ranked: dict[str, list[str]] = {}
    for q, d in loc_pairs:
        ranked.setdefault(q, []).append(d)
    if exhaustive_q:
        loc_pairs = pairs_mod.exhaustive(query_names, data.db_names)
        retrieval_method += f" (ranking reported only; exhaustive query pairs: "\
                            f"{len(data.db_names)} db images <= {conf['exhaustive_max_db']})"
    io.write_pairs(pairs_loc, loc_pairs)
    stage.stop()
    logger.info("%d db-db pairs (%s), %d query-db pairs (%s)", len(db_pairs), db_pairs_method,
                len(loc_pairs), retrieval_method)

    # 4. matching
    with stage("match"):
        match.main(matcher, pairs_db, feature_path, matches=matches_db)
        match.main(matcher, pairs_loc, feature_path, matches=matches_loc)

    # 5. triangulation
    with stage("triangulate"):
        rec = tri.main(sfm_dir, ref, data.image_dir, pairs_db, feature_path, matches_db,
                       conf=conf["triangulation"])
    tri_stats = json.loads((sfm_dir / "triangulation_stats.json").read_text())

    # 6. localization
    with stage("localize"):
        logs = loc.main(rec, data.queries, pairs_loc, feature_path, matches_loc, results_path,
                        conf=conf["localization"])

    # 7. evaluation
    evaluation, table, retrieval_recall = None, None, None
    if data.ground_truth:
        evaluation = ev.evaluate(results_path, data.ground_truth, data.query_condition)
        table = ev.format_table({tag: evaluation})
        db_poses = {im.name: colmap.rigid_to_qt(im.cam_from_world()) for im in ref.images.values()}
        retrieval_recall = {}
        for cond in ("day", "night"):
            gt = {q: p for q, p in data.ground_truth.items() if data.query_condition[q] == cond}
            retrieval_recall[cond] = ev.retrieval_recall(ranked, gt, db_poses, ks=(1, 5, 10))
    summary = {
        "features": features, "dataset": str(dataset), "synthetic": synthetic,
        "out_dir": str(out), "results_path": str(results_path),
        "logs_path": str(loc.logs_path_for(results_path)),
        "conf": {**conf, "matcher": matcher, "extract": {k: ext_conf[k] for k in sorted(ext_conf)}},
        "db_pairs_method": db_pairs_method, "retrieval_method": retrieval_method,
        "query_pairs": "exhaustive" if exhaustive_q else f"retrieval top {conf['num_loc']}",
        "num_query_pairs": len(loc_pairs), "retrieval_recall": retrieval_recall,
        "num_db": len(data.db_names), "num_queries": len(query_names),
        "timings": timings, "cpu_timings": cpu_timings, "triangulation": tri_stats, "localization": logs["summary"],
        "failures": {q: e["reason"] for q, e in logs["loc"].items() if not e["success"]},
        "evaluation": ({k: v for k, v in evaluation.items() if k != "per_query"}
                       if evaluation else None),
        "per_query": (evaluation or {}).get("per_query"),
        "table": table,
    }
    _write_json(out / "results.json", summary)
    return summary


def format_timings(timings: dict[str, float], cpu: dict[str, float] | None = None,
                   title: str | None = None) -> str:
    """Table: stage, wall seconds (+ process CPU seconds when given), and a total row."""
    rows = [(k, f"{v:.2f}", f"{cpu[k]:.2f}" if cpu and k in cpu else "")
            for k, v in timings.items()]
    rows.append(("total", f"{sum(timings.values()):.2f}",
                 f"{sum(cpu.values()):.2f}" if cpu else ""))
    w = max(len("stage"), *(len(r[0]) for r in rows))
    head = f"{'stage'.ljust(w)}  wall s" + ("   CPU s" if cpu else "")
    lines = ([title] if title else []) + [head, "-" * len(head)]
    lines += [f"{a.ljust(w)}  {b:>6}" + (f"  {c:>6}" if cpu else "") for a, b, c in rows]
    return "\n".join(lines)


def print_summary(s: dict) -> None:
    loc = s["localization"]
    tri = s["triangulation"]
    print(f"features {s['features']} | dataset {s['dataset']}"
          f"{' (synthetic)' if s['synthetic'] else ''} | {s['num_db']} db, "
          f"{s['num_queries']} queries")
    print(f"triangulation: {tri['num_points3D']} points, mean track length "
          f"{tri['mean_track_length']:.2f}, mean reprojection error "
          f"{tri['mean_reprojection_error_px']:.3f} px")
    print(f"localization: {loc['num_localized']} / {loc['num_queries']} queries with a PnP pose"
          + (f"; failures: {loc['failure_reasons']}" if loc["num_failed"] else ""))
    if s.get("retrieval_recall"):
        print(f"query pairs: {s['query_pairs']}; retrieval recall@1/5/10 (a covisible db view "
              "in the top k): " + ", ".join(
                  f"{c} " + "/".join(f"{100 * v:.0f}" for v in r.values())
                  for c, r in s["retrieval_recall"].items() if r))
    if s["table"]:
        print(s["table"])
    else:
        print("no ground truth: submit", s["results_path"])
    print(format_timings(s["timings"], s.get("cpu_timings")))
    print(f"results: {s['results_path']}\nsummary: {Path(s['out_dir']) / 'results.json'}")


def main(argv: list[str] | None = None) -> dict:
    from localize.cli import positive_int
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True,
                   help="registered descriptor name (sift, rootsift, hardnet, ...) or checkpoint")
    p.add_argument("--dataset", default=None,
                   help=f"Aachen-layout root (default {REAL_ROOT} if present, else the "
                        "synthetic scene)")
    p.add_argument("--outputs", default="outputs/aachen")
    p.add_argument("--num_covis", type=positive_int, default=DEFAULTS["num_covis"])
    p.add_argument("--num_loc", type=positive_int, default=DEFAULTS["num_loc"])
    p.add_argument("--query_pairs", default=DEFAULTS["query_pairs"],
                   choices=["auto", "exhaustive", "retrieval"],
                   help="query-db pairs: exhaustive, retrieval top --num_loc, or auto "
                        f"(exhaustive up to {DEFAULTS['exhaustive_max_db']} db images)")
    p.add_argument("--max_keypoints", type=positive_int, default=None,
                   help="strongest DoG keypoints per image (>= 1; default: extraction's)")
    p.add_argument("--resize_max", type=positive_int, default=None,
                   help="longer image side seen by the detector (>= 1 px)")
    p.add_argument("--matcher", default=None, help="localize.match conf name")
    p.add_argument("--device", default=None)
    p.add_argument("--overwrite", action="store_true", help="recompute everything")
    p.add_argument("--synthetic", default="default", choices=["default", "easy", "hard"],
                   help="synthetic scene preset used when no --dataset is given")
    p.add_argument("--verbose", action="store_true", help="keep COLMAP's INFO log lines")
    args = p.parse_args(argv)
    if not args.verbose:  # glog reads this when pycolmap is first imported
        os.environ.setdefault("GLOG_minloglevel", "1")
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s %(name)s %(levelname)s] %(message)s")
    if args.dataset is not None and not Path(args.dataset).exists():
        p.exit(2, f"pipelines.aachen: dataset {args.dataset} not found (omit --dataset for the "
                  f"synthetic scene)\n")
    from localize.cli import cli_errors
    with cli_errors("pipelines.aachen"):
        s = run(args.features, args.dataset, args.outputs, num_covis=args.num_covis,
                num_loc=args.num_loc, max_keypoints=args.max_keypoints,
                resize_max=args.resize_max, matcher=args.matcher, device=args.device,
                overwrite=args.overwrite, synthetic=args.synthetic,
                query_pairs=args.query_pairs)
    print_summary(s)
    return s


if __name__ == "__main__":
    main()
